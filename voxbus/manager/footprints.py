"""Measured model footprints, remembered across runs in `<cache>/footprints.json`.

Keyed by model id, file fingerprint, quantization and device; the value is one worker's largest
measured RSS and GPU memory. Admission uses the record, so only a model never loaded here is
estimated from its file size (and the estimate is replaced by a measurement at its first load).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

# A worker process is a Python interpreter with numpy and the model library imported before it
# holds any weights: about this much on top of the files, measured on the bundled models.
PROCESS_OVERHEAD = 120 << 20
SLACK = 4 << 20


class Footprints:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.records: dict[str, list[int]] = json.loads(path.read_text())
        except (OSError, ValueError):
            self.records = {}

    def estimate(self, key: str, file_bytes: int, device: str) -> tuple[int, int]:
        """(RAM, VRAM) one worker of this model is expected to hold."""
        measured = self.records.get(key)
        if measured:
            return measured[0], measured[1]
        if device == "cpu":
            return PROCESS_OVERHEAD + int(file_bytes * 1.25), 0
        return PROCESS_OVERHEAD + int(file_bytes * 0.25), int(file_bytes * 1.2)

    def record(self, key: str, ram: int, vram: int) -> None:
        old = self.records.get(key, [0, 0])
        if ram <= old[0] + SLACK and vram <= old[1] + SLACK:
            return  # not worth a write: RSS creeps by pages as a worker runs
        new = [max(ram, old[0]), max(vram, old[1])]
        self.records[key] = new
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.records, indent=1))
            tmp.replace(self.path)
        except OSError as exc:
            log.warning("cannot save footprint records: %s", exc)
