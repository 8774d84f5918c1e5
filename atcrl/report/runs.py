"""Reading one run: an `atcrl train` or `atcrl pretrain` directory, or an `atcrl probe` JSON.

A file that is missing or corrupt becomes a message naming it (appended to ``problems``) and the
reader returns None or what it could read, never raising: one broken run must not hide the others.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class EvalPoint:
    agent_step: int
    env_step: int
    """agent_step × the run's action repeat: the x-axis the paper uses."""
    mean: float
    std: float | None


@dataclass(frozen=True)
class TrainRun:
    """One `atcrl train` run directory."""

    path: Path
    env: str
    preset: str
    mode: str | None
    seed: int | None
    action_repeat: int
    planned_steps: int | None
    """Agent steps the run was configured for (loop.steps)."""
    last_step: int
    """Newest agent step in metrics.jsonl (0 when nothing was logged)."""
    evals: tuple[EvalPoint, ...]
    has_summary: bool
    wall_time_s: float | None
    """From summary.json when it covers the last step, else the span of the metrics' timestamps."""
    last_rate: float | None = None
    """The newest logged perf/steps_per_s: the current training speed (warm-up steps are much faster)."""
    curve: str = "eval"
    """What ``evals`` holds: "eval" (evaluation episodes), or "train" for a run that logged no evaluation
    (e.g. PPO runs with --eval-episodes 0): the training episodes' raw score, as a trailing mean over
    TRAIN_WINDOW logged intervals (the curve the paper plots for Atari)."""

    @property
    def finished(self) -> bool:
        return self.has_summary and (self.planned_steps is None or self.last_step >= self.planned_steps)

    @property
    def steps_per_s(self) -> float | None:
        """Agent steps per wall-clock second over the whole run, evaluations included."""
        return self.last_step / self.wall_time_s if self.wall_time_s and self.last_step else None


@dataclass(frozen=True)
class PretrainRun:
    """One `atcrl pretrain` run directory."""

    path: Path
    objective: str | None
    planned_updates: int | None
    last_update: int
    val: dict[str, float]
    """The newest validation record, without the "val/" prefix (loss, accuracy, ...)."""
    val_update: int | None
    train: dict[str, float]
    """The newest training record of ul/loss and ul/accuracy (without the prefix)."""
    exported: bool
    """The run got to the end and exported its encoder."""


@dataclass(frozen=True)
class TargetR2:
    """One probe target's R² on the test episodes, with its bootstrap 95% interval over them."""

    name: str
    r2: float
    ci: tuple[float, float] | None
    """None: the result predates the intervals."""


@dataclass(frozen=True)
class ProbedTask:
    """One task of a probe result: every target's R² (the mean last, named "mean") and the test episodes."""

    targets: tuple[TargetR2, ...]
    test_episodes: int | None


@dataclass(frozen=True)
class ProbeRun:
    """One `atcrl probe --out FILE.json` result."""

    path: Path
    mean_r2: float
    tasks: dict[str, float]
    """Mean R² per task."""
    encoder: str | None
    per_task: dict[str, ProbedTask] = field(default_factory=dict)
    baseline: dict[str, ProbedTask] = field(default_factory=dict)
    """The same probe of `--baseline random` (empty when it was not asked for)."""


Result = TrainRun | PretrainRun | ProbeRun


# --------------------------------------------------------------------------- files


def read_json_file(path: Path, problems: list[str]) -> Any | None:
    """The parsed file, or None with the reason (missing, corrupt) in ``problems``."""
    if not path.is_file():
        problems.append(f"{path}: missing")
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        problems.append(f"{path}: corrupt, not valid JSON ({e}); skipped")
        return None


def read_config(run_dir: Path, problems: list[str]) -> dict[str, Any] | None:
    """A run's config.json as a dict, or None with the reason in ``problems``."""
    config = read_json_file(run_dir / "config.json", problems)
    if config is not None and not isinstance(config, dict):
        problems.append(f"{run_dir / 'config.json'}: not a JSON object; skipped")
        return None
    return config


METRIC_CSVS = ("eval.csv", "train.csv", "pretrain.csv")
"""A data folder's run keeps its metrics as these CSVs instead of metrics.jsonl (data.py writes them)."""


def read_metric_csvs(paths: list[Path]) -> list[dict[str, Any]]:
    """Rows of a data folder's metric CSVs as metrics records (empty cells left out), file after file."""
    rows = []
    for path in paths:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                rows.append({k: _parse(v) for k, v in row.items() if v})
    return rows


def _parse(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def has_metrics(run_dir: Path) -> bool:
    return any((run_dir / name).is_file() for name in ("metrics.jsonl", *METRIC_CSVS))


def read_metrics(path: Path, problems: list[str]) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl (or of a data folder's CSVs beside where it would be); unreadable
    lines are skipped and counted in ``problems``."""
    if not path.is_file():
        if csvs := [path.parent / name for name in METRIC_CSVS if (path.parent / name).is_file()]:
            return read_metric_csvs(csvs)
        problems.append(f"{path}: missing (no metrics logged)")
        return []
    rows, bad = [], 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), (int, float)):
            rows.append(row)
        else:
            bad += 1
    if bad:
        problems.append(f"{path}: skipped {bad} unreadable line(s)")
    return rows


def number(v: Any) -> float | None:
    """A finite float, or None for anything else (null, NaN, text, booleans)."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


# --------------------------------------------------------------------------- runs


def read_train_run(path: Path, problems: list[str]) -> TrainRun | None:
    """A train run directory, or None (with the reason in ``problems``) when its config is unusable."""
    config = read_config(path, problems)
    if config is None:
        return None
    if not isinstance(config.get("loop"), dict):
        problems.append(f"{path / 'config.json'}: no 'loop' section, not an `atcrl train` run; skipped")
        return None
    loop = config["loop"]
    repeat = int(config.get("action_repeat") or loop.get("action_repeat") or 0)
    if repeat < 1:
        problems.append(f"{path / 'config.json'}: no action_repeat; env steps are taken equal to agent steps")
        repeat = 1
    rows = read_metrics(path / "metrics.jsonl", problems)
    evals = []
    for r in rows:
        mean = number(r.get("eval/return_mean"))
        if mean is not None:
            step = int(r["step"])
            evals.append(EvalPoint(step, step * repeat, mean, number(r.get("eval/return_std"))))
    curve = "eval"
    if not evals and (training := _training_curve(rows, repeat)):
        evals, curve = training, "train"
    last_step = int(max((r["step"] for r in rows), default=0))
    summary = None
    if (path / "summary.json").is_file():
        summary = read_json_file(path / "summary.json", problems)
    wall = None
    if isinstance(summary, dict) and summary.get("steps") == last_step:
        wall = number(summary.get("wall_time_s"))
    if wall is None:
        times = [t for r in rows if (t := number(r.get("time"))) is not None]
        wall = max(times) - min(times) if len(times) > 1 else None
    rates = [x for r in rows if (x := number(r.get("perf/steps_per_s"))) is not None]
    planned = loop.get("steps")
    seed = loop.get("seed", (config.get("train") or {}).get("seed"))
    return TrainRun(path=path, env=str(loop.get("env", "?")), preset=str(config.get("preset") or "?"),
                    mode=loop.get("mode"), seed=int(seed) if isinstance(seed, int) else None, action_repeat=repeat,
                    planned_steps=int(planned) if isinstance(planned, int) else None, last_step=last_step,
                    evals=tuple(evals), has_summary=isinstance(summary, dict), wall_time_s=wall,
                    last_rate=rates[-1] if rates else None, curve=curve)


TRAIN_WINDOW = 10
"""Logged intervals averaged into each point of a training-return curve."""


def _training_curve(rows: list[dict[str, Any]], repeat: int) -> list[EvalPoint]:
    """Training episodes' raw score (rl/episode_return) per logged interval, as a trailing mean over
    TRAIN_WINDOW intervals; std is over the same window."""
    logged = [(int(r["step"]), v) for r in rows if (v := number(r.get("rl/episode_return"))) is not None]
    points = []
    for i, (step, _) in enumerate(logged):
        window = np.asarray([v for _, v in logged[max(0, i + 1 - TRAIN_WINDOW):i + 1]])
        points.append(EvalPoint(step, step * repeat, float(window.mean()), float(window.std())))
    return points


def read_pretrain_run(path: Path, problems: list[str]) -> PretrainRun | None:
    config = read_config(path, problems)
    if config is None:
        return None
    exported = (path / "encoder.json").is_file()
    # The random-encoder baseline exports without training, so it has no metrics to miss.
    rows = read_metrics(path / "metrics.jsonl", problems) if has_metrics(path) or not exported else []
    val_rows = [r for r in rows if any(k.startswith("val/") for k in r)]
    train_rows = [r for r in rows if "ul/loss" in r]
    last_val = val_rows[-1] if val_rows else {}
    last_train = train_rows[-1] if train_rows else {}
    planned = (config.get("optim") or {}).get("total_updates")
    return PretrainRun(
        path=path, objective=(config.get("config") or {}).get("objective"),
        planned_updates=int(planned) if isinstance(planned, int) else None,
        last_update=int(max((r["step"] for r in rows), default=0)),
        val={k[4:]: v for k, x in last_val.items() if k.startswith("val/") and (v := number(x)) is not None},
        val_update=int(last_val["step"]) if last_val else None,
        train={k[3:]: v for k in ("ul/loss", "ul/accuracy") if (v := number(last_train.get(k))) is not None},
        exported=exported)


def read_probe(path: Path, problems: list[str]) -> ProbeRun | None:
    body = read_json_file(path, problems)
    if body is None:
        return None
    mean = number(body.get("mean_r2")) if isinstance(body, dict) else None
    if mean is None:
        problems.append(f"{path}: no numeric 'mean_r2', not an `atcrl probe` result; skipped")
        return None
    tasks = body.get("tasks") if isinstance(body.get("tasks"), dict) else {}
    per_task = {t: v for t, d in tasks.items() if isinstance(d, dict) and (v := number(d.get("mean_r2"))) is not None}
    baseline = body.get("baseline") if isinstance(body.get("baseline"), dict) else {}
    return ProbeRun(path=path, mean_r2=mean, tasks=per_task, encoder=body.get("encoder"),
                    per_task=task_probes(tasks), baseline=task_probes(baseline.get("tasks")))


def _interval(value: Any) -> tuple[float, float] | None:
    if isinstance(value, list) and len(value) == 2 and None not in (bounds := [number(v) for v in value]):
        return bounds[0], bounds[1]
    return None


def task_probes(tasks: Any) -> dict[str, ProbedTask]:
    """Per task, its targets' R² and intervals as a probe JSON records them (unnamed: physics[i]); tasks without a
    numeric R² list are left out."""
    out: dict[str, ProbedTask] = {}
    for task, d in (tasks.items() if isinstance(tasks, dict) else ()):
        r2 = d.get("r2") if isinstance(d, dict) else None
        if not isinstance(r2, list) or any(number(v) is None for v in r2) or number(d.get("mean_r2")) is None:
            continue
        names = d.get("targets") if isinstance(d.get("targets"), list) else [f"physics[{i}]" for i in range(len(r2))]
        cis = d.get("r2_ci") if isinstance(d.get("r2_ci"), list) else [None] * len(r2)
        rows = [TargetR2(str(n), float(v), _interval(ci)) for n, v, ci in zip(names, r2, cis)]
        rows.append(TargetR2("mean", float(d["mean_r2"]), _interval(d.get("mean_r2_ci"))))
        episodes = d.get("test_episodes")
        out[task] = ProbedTask(tuple(rows), episodes if isinstance(episodes, int) else None)
    return out


def read_run(path: Path, problems: list[str]) -> Result | None:
    """Whatever run ``path`` is (train or pretrain directory, probe JSON), judged by its files."""
    if path.is_file():
        return read_probe(path, problems)
    config = read_config(path, problems)
    if config is None:
        return None
    if config.get("kind") == "pretrain":
        return read_pretrain_run(path, problems)
    return read_train_run(path, problems)
