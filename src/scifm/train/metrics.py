"""Training metrics: one JSON object per logged step, appended to RUN/metrics.jsonl.

Lines are flushed as they are written so a crashed run keeps its history; a resumed run
appends after the last complete line (records past the resume step are dropped first).
This is the always-on sink of `scifm.train.sinks.open_sinks` (TensorBoard and W&B beside it)
and the file `scifm plot` and the run summary read back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scifm.core.io import write_text


class MetricsLog:
    def __init__(self, path: Path, resume_step: int = 0) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = [r for r in read_metrics(path) if r.get("step", 0) <= resume_step]
        write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
        self._handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Records of a metrics file; a torn last line (a crash mid-write) is ignored."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records
