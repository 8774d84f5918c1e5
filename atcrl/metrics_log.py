"""Metrics to disk: ``metrics.jsonl`` always, ``metrics.csv`` on close, TensorBoard when wanted.

Metric names are namespaced by who produced them (``ul/…``, ``rl/…``, ``eval/…``, ``perf/…``).
Each ``log`` call is one JSON line holding ``step``, wall-clock ``time`` and the metrics, flushed
immediately so a killed run keeps everything it logged. Resuming at step k first drops lines
with step > k (they were logged after the checkpoint being resumed), so curves never hold the
same step twice.

(The module is called metrics_log, not logging, so that running a script that lives inside atcrl/
never shadows the standard library's ``logging``, which torch imports.)
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from atcrl.atomic import atomic_write

JSONL_NAME = "metrics.jsonl"
CSV_NAME = "metrics.csv"
TB_DIR = "tb"


class MetricsLogger:
    """Append-only metric log for one run directory; a no-op when ``enabled`` is False (DDP ranks > 0)."""

    def __init__(
        self, run_dir: str | Path, *, tensorboard: bool = True, enabled: bool = True,
        resume_from_step: int | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._file: io.TextIOBase | None = None
        self._tb = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        path = self.run_dir / JSONL_NAME
        if resume_from_step is None:
            self._file = path.open("w")
        else:
            truncate_jsonl(path, resume_from_step)
            self._file = path.open("a")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step hides events a crashed run wrote after the checkpoint we resume from.
            purge = None if resume_from_step is None else resume_from_step + 1
            self._tb = SummaryWriter(str(self.run_dir / TB_DIR), purge_step=purge)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Record ``metrics`` (numbers; tensors and numpy scalars are converted) at ``step``."""
        if not self.enabled:
            return
        if self._file is None:
            raise RuntimeError("MetricsLogger.log called after close()")
        values = {k: float(v) for k, v in metrics.items()}
        for reserved in ("step", "time"):
            if reserved in values:
                raise ValueError(f"metric name {reserved!r} is reserved by the logger")
        # Strict JSON has no NaN/inf: write null there; TensorBoard still receives the raw value.
        row = {"step": int(step), "time": time.time(),
               **{k: (v if math.isfinite(v) else None) for k, v in values.items()}}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(k, v, int(step))

    def close(self) -> None:
        """Flush everything and write ``metrics.csv`` (one column per metric ever logged)."""
        if not self.enabled or self._file is None:
            return
        self._file.close()
        self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        write_csv(self.run_dir / JSONL_NAME, self.run_dir / CSV_NAME)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Every complete record of a metrics file; a torn last line (from a kill) is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    return rows


def truncate_jsonl(path: str | Path, max_step: int) -> None:
    """Rewrite ``path`` keeping only records with step <= ``max_step`` (atomically)."""
    path = Path(path)
    if not path.exists():
        return
    kept = [r for r in read_jsonl(path) if r["step"] <= max_step]
    atomic_write(path, lambda f: f.write("".join(json.dumps(r) + "\n" for r in kept).encode()))


def write_csv(jsonl_path: str | Path, csv_path: str | Path) -> None:
    """The JSONL records as a CSV table: step, time, then every metric in first-seen order."""
    rows = read_jsonl(jsonl_path)
    columns = list(dict.fromkeys(["step", "time", *(k for r in rows for k in r)]))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in r.items()})
    atomic_write(csv_path, lambda f: f.write(buf.getvalue().encode()))
