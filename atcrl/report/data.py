"""An experiment's raw results, small enough for git: the data/ folder a published report is rebuilt from.

``save_data(EXP, DATA)`` writes DATA/experiment.json (the record: plan, provenance, state of every
step) and, per step that the report reads, the numbers it reads and nothing else (kilobytes: no
checkpoint, no dataset, no encoder weights):

  train     DATA/<out>/config.json, summary.json, eval.csv (step, time, eval/return_mean,
            eval/return_std), train.csv (every other metrics row: step, time, rl/episode_return,
            perf/steps_per_s)
  pretrain  DATA/<out>/config.json, pretrain.csv (step, time, ul/loss, ul/accuracy, val/*),
            encoder.json (the exported encoder's metadata) when exported
  probe     DATA/<out> (the probe's JSON result, per-target R² included)

The readers (runs.py) take a run directory with these CSVs where metrics.jsonl is absent, so
`atcrl report DATA` builds the same report as from the experiment directory itself.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

from atcrl.atomic import atomic_write
from atcrl.report.runs import read_metrics

EVAL_COLUMNS = ("step", "time", "eval/return_mean", "eval/return_std")
TRAIN_COLUMNS = ("step", "time", "rl/episode_return", "perf/steps_per_s")
PRETRAIN_COLUMNS = ("step", "time", "ul/loss", "ul/accuracy")


def write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([["" if r.get(c) is None else r[c] for c in columns] for r in rows])
    _write(path, buffer.getvalue())


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(text.encode()), mode=0o644)


def _copy(src: Path, dst: Path) -> None:
    if src.is_file():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)


def _train(src: Path, dst: Path, problems: list[str]) -> None:
    rows = read_metrics(src / "metrics.jsonl", problems)
    evals = [r for r in rows if "eval/return_mean" in r]
    write_csv(dst / "eval.csv", EVAL_COLUMNS, evals)
    write_csv(dst / "train.csv", TRAIN_COLUMNS, [r for r in rows if "eval/return_mean" not in r])
    for name in ("config.json", "summary.json"):
        _copy(src / name, dst / name)


def _pretrain(src: Path, dst: Path, problems: list[str]) -> None:
    rows = read_metrics(src / "metrics.jsonl", problems) if (src / "metrics.jsonl").exists() else []
    val = sorted({k for r in rows for k in r if k.startswith("val/")})
    write_csv(dst / "pretrain.csv", (*PRETRAIN_COLUMNS, *val), rows)
    for name in ("config.json", "encoder.json"):
        _copy(src / name, dst / name)


def save_data(exp_dir: Path, data_dir: Path, problems: list[str]) -> int:
    """Write ``data_dir`` from the experiment directory ``exp_dir`` (replacing an older one); the number of
    step outputs written."""
    record = json.loads((exp_dir / "experiment.json").read_text())
    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    written = 0
    for step in record.get("steps") or []:
        src, dst = exp_dir / step["out"], data_dir / step["out"]
        if not src.exists():
            continue
        if step["kind"] == "train":
            _train(src, dst, problems)
        elif step["kind"] == "pretrain":
            _pretrain(src, dst, problems)
        elif step["kind"] == "probe":
            _copy(src, dst)
        else:
            continue  # collect/export steps leave data, not numbers
        written += 1
    _write(data_dir / "experiment.json", json.dumps(record, indent=2) + "\n")
    return written
