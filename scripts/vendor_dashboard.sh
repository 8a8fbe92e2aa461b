#!/usr/bin/env bash
# Refresh the dashboard's vendored front-end libraries from npm (pinned versions). The files are
# committed so that `pip install` serves the page with no network and no CDN; run this only to
# upgrade them, then check the page (tests/test_dashboard.py) and commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."
UPLOT=1.6.32
WAVESURFER=8.0.1
dest=voxbus/gateways/dashboard_static/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
npm install --prefix "$work" --no-audit --no-fund --silent "uplot@$UPLOT" "wavesurfer.js@$WAVESURFER"
mkdir -p "$dest"
m="$work/node_modules"
cp "$m/uplot/dist/uPlot.iife.min.js" "$m/uplot/dist/uPlot.min.css" "$dest/"
cp "$m/uplot/LICENSE" "$dest/LICENSE.uplot"
cp "$m/wavesurfer.js/dist/wavesurfer.min.js" "$m/wavesurfer.js/dist/plugins/regions.min.js" "$dest/"
cp "$m/wavesurfer.js/LICENSE" "$dest/LICENSE.wavesurfer"
printf 'uplot %s\nwavesurfer.js %s\n' "$UPLOT" "$WAVESURFER" > "$dest/VERSIONS"
echo "vendored into $dest: $(tr '\n' ' ' < "$dest/VERSIONS")"
