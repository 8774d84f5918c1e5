"""Finding what to report: experiment directories (experiment.json and its steps' outputs) and runs.

Unreadable files become messages in ``problems`` naming them; only a path that does not exist or
holds nothing reportable at all is an error (ReportInputError).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atcrl.report.runs import (
    Result,
    number,
    read_json_file,
    read_pretrain_run,
    read_probe,
    read_run,
    read_train_run,
)

EXPERIMENT_FILE = "experiment.json"


class ReportInputError(ValueError):
    """An input cannot be used at all (e.g. it does not exist); the message names it."""


@dataclass
class Step:
    """One step of an experiment, as experiment.json lists it, plus what its output holds."""

    id: str
    kind: str
    group: str
    variant: str
    seed: int | None
    env: str | None
    status: str
    command: list[str]
    out: str
    returncode: int | None = None
    wall_time_s: float | None = None
    log: str | None = None
    """The step's log file, relative to the experiment directory (not part of the contract; used when present)."""
    log_tail: str | None = None
    """The end of the log of a failed or skipped step, as the record keeps it (a data folder has no logs)."""
    git_commit: str | None = None
    git_dirty: bool | None = None
    """The git state of the attempt that made the step's output (experiment.json provenance)."""
    attempts: int = 0
    inputs: dict[str, str | None] = field(default_factory=dict)
    """Input path -> content hash when the step last started (experiment.json provenance)."""
    output_hash: str | None = None
    result: Result | None = None


@dataclass
class Experiment:
    path: Path
    meta: dict[str, Any]
    steps: list[Step]

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or self.path.name)


@dataclass
class Inputs:
    """Everything found under the paths given on the command line."""

    experiments: list[Experiment] = field(default_factory=list)
    runs: list[Result] = field(default_factory=list)
    """Runs given directly (not inside an experiment)."""

    def empty(self) -> bool:
        return not self.experiments and not self.runs


# --------------------------------------------------------------------------- experiments


def _step(record: Any) -> Step:
    if not isinstance(record, dict):
        raise TypeError(f"a step is not a JSON object: {record!r}")
    missing = [k for k in ("id", "kind", "out") if k not in record]
    if missing:
        raise ValueError(f"a step lacks {', '.join(missing)}: {record!r}")
    seed = record.get("seed")
    return Step(id=str(record["id"]), kind=str(record["kind"]), group=str(record.get("group") or record["kind"]),
                variant=str(record.get("variant") or "default"), seed=seed if isinstance(seed, int) else None,
                env=record.get("env"), status=str(record.get("status") or "unknown"),
                command=[str(a) for a in record.get("command") or []], out=str(record["out"]),
                returncode=record.get("returncode"), wall_time_s=number(record.get("wall_time_s")),
                log=record["log"] if isinstance(record.get("log"), str) else None,
                log_tail=record["log_tail"] if isinstance(record.get("log_tail"), str) else None,
                git_commit=record["git_commit"] if isinstance(record.get("git_commit"), str) else None,
                git_dirty=record["git_dirty"] if isinstance(record.get("git_dirty"), bool) else None,
                attempts=len(record["attempts"]) if isinstance(record.get("attempts"), list) else 0,
                inputs=dict(record["inputs"]) if isinstance(record.get("inputs"), dict) else {},
                output_hash=record["output_hash"] if isinstance(record.get("output_hash"), str) else None)


READERS = {"train": read_train_run, "pretrain": read_pretrain_run, "probe": read_probe}


def read_experiment(path: Path, problems: list[str]) -> Experiment | None:
    """An experiment directory with the result of every step whose output exists."""
    meta = read_json_file(path / EXPERIMENT_FILE, problems)
    if meta is None:
        return None
    if not isinstance(meta, dict):
        problems.append(f"{path / EXPERIMENT_FILE}: not a JSON object; experiment skipped")
        return None
    try:
        if not isinstance(meta.get("steps", []), list):
            raise TypeError("'steps' is not a list")
        steps = [_step(s) for s in meta.get("steps") or []]
    except (ValueError, TypeError, AttributeError) as e:
        problems.append(f"{path / EXPERIMENT_FILE}: malformed steps ({e}); experiment skipped")
        return None
    for step in steps:
        reader = READERS.get(step.kind)
        out = path / step.out
        if reader is None:
            continue  # collect/export steps leave data, not numbers
        if out.exists():
            step.result = reader(out, problems)
        elif step.status == "done":
            problems.append(f"{out}: missing, although step {step.id} is marked done")
    return Experiment(path=path, meta=meta, steps=steps)


def _kind_of(path: Path) -> str | None:
    if path.is_file():
        # Cheap sniff, so a directory scan does not complain about every unrelated .json beside the runs.
        return "probe" if path.suffix == ".json" and "mean_r2" in path.read_text(errors="replace") else None
    if (path / EXPERIMENT_FILE).is_file():
        return "experiment"
    if (path / "config.json").is_file():
        return "run"
    return None


def load_inputs(paths: list[Path], problems: list[str]) -> Inputs:
    """Experiments and runs under ``paths``: each path is one, or a directory whose children are.

    Raises ReportInputError for a path that does not exist or holds nothing reportable.
    """
    found = Inputs()
    for path in paths:
        if not path.exists():
            raise ReportInputError(f"{path} does not exist")
        # A .json named on the command line is taken as a probe result, so a wrong one gets a message.
        kind = "probe" if path.is_file() and path.suffix == ".json" else _kind_of(path)
        children = [path] if kind else [c for c in sorted(path.iterdir()) if _kind_of(c)] if path.is_dir() else []
        if not children:
            raise ReportInputError(f"{path} holds no experiment ({EXPERIMENT_FILE}), train/pretrain run (config.json) "
                                   "or probe result (.json), neither itself nor in its subdirectories")
        for child in children:
            if child.is_dir() and _kind_of(child) == "experiment":
                if (exp := read_experiment(child, problems)) is not None:
                    found.experiments.append(exp)
            elif (run := read_run(child, problems)) is not None:
                found.runs.append(run)
    return found
