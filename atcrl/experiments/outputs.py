"""What a finished step leaves on disk, and how an unfinished one is run again.

A step is complete when its output marker exists: a training run's summary.json at its configured
step count, a pretraining run's exported encoder, a dataset's meta.json, a probe's JSON file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from atcrl.experiments.spec import PlanError, Step


def is_complete(step: Step, out: Path) -> bool:
    """Whether the step's output on disk is finished (its marker exists)."""
    path = out / step.out
    if step.kind == "train":
        return _train_finished(path)
    if step.kind == "pretrain":
        return (path / "encoder.safetensors").is_file() and (path / "encoder.json").is_file()
    if step.kind == "collect":
        return (path / "meta.json").is_file()
    if step.kind == "probe":
        return path.is_file()
    return path.exists()  # export


def _train_finished(run: Path) -> bool:
    # Ctrl-C or --stop-after also write summary.json; a finished run reached its configured steps.
    try:
        summary = json.loads((run / "summary.json").read_text())
        config = json.loads((run / "config.json").read_text())
        return int(summary["steps"]) >= int(config["loop"]["steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return False


def attempt(step: Step, out: Path) -> tuple[list[str], bool]:
    """(argv after `atcrl` for this attempt, whether it continues earlier work); clears an output that
    cannot be continued, so the command does not refuse to write into it."""
    from atcrl.checkpoint import latest_checkpoint

    path = out / step.out
    command = list(step.command)
    if step.kind in ("train", "pretrain") and path.is_dir():
        if latest_checkpoint(path / "checkpoints") is not None:
            # The original flags agree with the saved run, so resuming with them keeps its session settings.
            return command + (["--resume", step.out] if step.kind == "train" else ["--resume"]), True
        _remove(path, out)
    elif step.kind == "collect" and path.exists() and not (path / "meta.json").is_file():
        _remove(path, out)
    return command, step.kind == "collect" and path.exists()


def _remove(path: Path, out: Path) -> None:
    resolved, root = path.resolve(), out.resolve()
    if root not in resolved.parents:  # never outside the experiment directory
        raise PlanError(f"refusing to remove {path}: not inside {out}")
    if resolved.is_dir():
        shutil.rmtree(resolved)
    else:
        resolved.unlink(missing_ok=True)
