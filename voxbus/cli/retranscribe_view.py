"""`voxbus replay --retranscribe`'s output: stored and new transcripts side by side, the word
diff and the WER; with `--all`, one line per session and a summary; `--json` for scripts."""

from __future__ import annotations

import argparse
import json
import sys
import time


def run_retranscribe(args: argparse.Namespace, config) -> int:
    from voxbus.bus import open_bus
    from voxbus.cli import run_async
    from voxbus.errors import VoxbusError
    from voxbus.retranscribe import retranscribe, transcribed_since

    async def main() -> int:
        async with open_bus(config, name="voxbus-retranscribe", embed=False) as bus:
            if not args.all:
                try:
                    c = await retranscribe(bus, args.session, config.stt, args.model)
                except LookupError as exc:
                    print(f"voxbus: {exc}", file=sys.stderr)
                    return 1
                print(json.dumps(c.as_json(), ensure_ascii=False) if args.json else side_by_side(c))
                return 0
            since = time.time() - (args.since if args.since is not None else 86400.0)
            sessions = await transcribed_since(bus, since)
            changed = 0
            for sid in sessions:
                try:
                    c = await retranscribe(bus, sid, config.stt, args.model)
                except LookupError:  # (its audio aged out of the stream)
                    print(f"{sid}: no stored audio any more", file=sys.stderr)
                    continue
                except VoxbusError as exc:  # (one session's failure is reported; the others go on)
                    print(f"{sid}: could not be re-transcribed: {exc}", file=sys.stderr)
                    continue
                changed += c.changed
                print(json.dumps(c.as_json(), ensure_ascii=False) if args.json
                      else f"{sid}: {'CHANGED' if c.changed else 'same'}  WER {c.wer * 100:.1f} %", flush=True)
            if not args.json:
                print(f"{len(sessions)} sessions, {changed} changed")
        return 0

    return run_async(main)


def side_by_side(c) -> str:
    from voxbus.timecodes import clock

    width = 48
    lines = [f"session {c.session}: stored transcripts | re-transcribed with {c.model}"]
    used: set[int] = set()
    for u in c.stored:
        mine = [i for i, n in enumerate(c.new) if i not in used and u.start - 0.5 <= (n.start + n.end) / 2 <= u.end + 0.5]
        used.update(mine)
        new = " ".join(c.new[i].text for i in mine)
        lines.append(f"{clock(u.start)}  {u.text[:width]:<{width}} | {new}")
    for i, n in enumerate(c.new):
        if i not in used:
            lines.append(f"{clock(n.start)}  {'':<{width}} | {n.text}")
    marked = " ".join(w if op == "=" else f"[-{w}-]" if op == "-" else f"{{+{w}+}}" for op, w in c.diff)
    lines += ["", f"diff: {marked}", f"WER {c.wer * 100:.1f} % ({'changed' if c.changed else 'no differences'})"]
    return "\n".join(lines)
