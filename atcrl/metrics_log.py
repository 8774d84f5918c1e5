"""Metrics to disk: ``metrics.jsonl`` always, ``metrics.csv`` on close, TensorBoard and Weights & Biases when wanted.

Metric names are namespaced by who produced them (``ul/…``, ``rl/…``, ``eval/…``, ``perf/…``).
Each ``log`` call is one JSON line holding ``step``, wall-clock ``time`` and the metrics, flushed
immediately so a killed run keeps everything it logged. Resuming at step k first drops lines
with step > k (they were logged after the checkpoint being resumed), so curves never hold the
same step twice.

Weights & Biases (the ``wandb`` extra) gets the same metrics at the same steps, the run's config, and eval
videos (``log_video``). Its run id is kept in the run directory (``wandb-id``), so a resumed run continues
the same W&B run; ``WANDB_MODE=offline`` writes it under ``RUN/wandb`` for a later ``wandb sync``.

(The module is called metrics_log, not logging, so that running a script that lives inside atcrl/
never shadows the standard library's ``logging``, which torch imports.)
"""

from __future__ import annotations

import csv
import io
import json
import math
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from atcrl.atomic import atomic_write

JSONL_NAME = "metrics.jsonl"
CSV_NAME = "metrics.csv"
TB_DIR = "tb"
WANDB_ID = "wandb-id"


class MetricsLogger:
    """Append-only metric log for one run directory; a no-op when ``enabled`` is False (DDP ranks > 0)."""

    def __init__(
        self, run_dir: str | Path, *, tensorboard: bool = True, enabled: bool = True,
        resume_from_step: int | None = None, wandb_project: str | None = None,
        config: Mapping[str, Any] | None = None,
    ):
        """wandb_project: also log to this Weights & Biases project (None: not at all), with ``config``."""
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._file: io.TextIOBase | None = None
        self._tb = None
        self._wandb: Any = None
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
        if wandb_project is not None:
            self._wandb = _start_wandb(self.run_dir, wandb_project, dict(config or {}))

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
        if self._wandb is not None:
            self._wandb.log(values, step=int(step))

    def log_video(self, step: int, path: str | Path, name: str = "eval/video") -> None:
        """An evaluation video already written to ``path`` (gif or mp4), for the loggers that show videos."""
        if self.enabled and self._wandb is not None:
            import wandb

            self._wandb.log({name: wandb.Video(str(path))}, step=int(step))

    def close(self) -> None:
        """Flush everything and write ``metrics.csv`` (one column per metric ever logged)."""
        if not self.enabled or self._file is None:
            return
        self._file.close()
        self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
        write_csv(self.run_dir / JSONL_NAME, self.run_dir / CSV_NAME)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _start_wandb(run_dir: Path, project: str, config: dict[str, Any]) -> Any:
    """A W&B run for ``run_dir``: the id saved there on first use, so a resume continues the same run."""
    try:
        import wandb
    except ImportError as e:
        raise RuntimeError("--wandb needs the wandb package: pip install 'atcrl[wandb]'") from e
    id_file = run_dir / WANDB_ID
    if id_file.exists():
        run_id = id_file.read_text().strip()
    else:
        run_id = secrets.token_hex(4)
        atomic_write(id_file, lambda f: f.write(run_id.encode()))
    return wandb.init(project=project, dir=str(run_dir), name=run_dir.name, id=run_id, resume="allow",
                      config=config)


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
