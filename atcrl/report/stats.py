"""Aggregation over seeds: mean ± std of final numbers, mean learning curves, and what is missing.

std is the sample standard deviation over seeds (ddof 1); a single seed has no std. A seed that
is missing, failed or stopped early is never dropped silently: it is counted in ``expected`` and
described in ``notes``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from atcrl.report.load import Step
from atcrl.report.runs import PretrainRun, ProbeRun, TrainRun

Spread = Literal["minmax", "std"]
SPREAD_LABEL = {"minmax": "shaded: min–max over seeds", "std": "shaded: mean ± std over seeds"}


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float | None
    """Sample std (ddof 1); None for a single value."""
    n: int


def stat(values: Iterable[float]) -> Stat | None:
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        return None
    return Stat(float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else None, int(v.size))


def fmt_stat(s: Stat | None, digits: int = 1, n: bool = True) -> str:
    if s is None:
        return "—"
    text = f"{s.mean:.{digits}f}" + (f" ± {s.std:.{digits}f}" if s.std is not None else "")
    return text + (f" (n={s.n})" if n else "")


def fmt_steps(steps: float | None) -> str:
    """94400 -> "94.4k", 1_000_000 -> "1M"."""
    if steps is None:
        return "—"
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if abs(steps) >= size:
            return f"{steps / size:.3g}{unit}"
    return f"{steps:.0f}"


def fmt_range(values: Sequence[float]) -> str:
    if not values:
        return "—"
    lo, hi = min(values), max(values)
    return fmt_steps(lo) if lo == hi else f"{fmt_steps(lo)}–{fmt_steps(hi)}"


# --------------------------------------------------------------------------- curves


@dataclass(frozen=True)
class Curve:
    """Eval return against env steps, aggregated over the seeds that reached each point."""

    x: np.ndarray
    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    n: np.ndarray
    """Seeds contributing to each point (fewer than the runs where some stopped earlier)."""


def mean_curve(runs: Sequence[TrainRun], spread: Spread = "minmax") -> Curve | None:
    by_x: dict[int, list[float]] = {}
    for run in runs:
        for p in run.evals:
            by_x.setdefault(p.env_step, []).append(p.mean)
    if not by_x:
        return None
    xs = sorted(by_x)
    vals = [np.asarray(by_x[x]) for x in xs]
    mean = np.array([v.mean() for v in vals])
    if spread == "minmax":
        lo, hi = np.array([v.min() for v in vals]), np.array([v.max() for v in vals])
    else:
        sd = np.array([v.std(ddof=1) if v.size > 1 else 0.0 for v in vals])
        lo, hi = mean - sd, mean + sd
    return Curve(np.asarray(xs), mean, lo, hi, np.array([v.size for v in vals]))


# --------------------------------------------------------------------------- cells: one variant (x env)


def _seed(step: Step) -> str:
    return f"{step.id} (seed {step.seed})" if step.seed is not None else step.id


def _duplicate_seeds(steps: Sequence[Step]) -> list[str]:
    counts: dict[int, int] = {}
    for s in steps:
        if s.seed is not None and s.result is not None:
            counts[s.seed] = counts.get(s.seed, 0) + 1
    return [f"seed {seed} appears in {n} runs ({', '.join(s.id for s in steps if s.seed == seed)}); each counts "
            "as one seed" for seed, n in counts.items() if n > 1]


def _missing_note(step: Step) -> str | None:
    """Why a step gives no result, or None if it does."""
    if step.result is not None:
        return None
    rc = f", exit code {step.returncode}" if step.returncode not in (None, 0) else ""
    return f"{_seed(step)}: {step.status}{rc}, no readable output"


@dataclass
class TrainCell:
    """Final eval return of one variant on one env, over its seeds."""

    env: str
    variant: str
    expected: int
    """Seeds the experiment asked for (or runs given)."""
    final: Stat | None
    final_env_steps: list[int]
    """Env steps of each seed's last evaluation."""
    runs: list[TrainRun]
    steps_per_s: Stat | None
    last_rate: Stat | None
    wall_time_s: Stat | None
    notes: list[str] = field(default_factory=list)

    @property
    def seeds_text(self) -> str:
        n = self.final.n if self.final else 0
        return str(n) if n == self.expected else f"{n} of {self.expected}"


def train_cell(env: str, variant: str, steps: Sequence[Step]) -> TrainCell:
    runs, notes, finals, final_steps = [], [], [], []
    for step in steps:
        if (note := _missing_note(step)) is not None:
            notes.append(note)
            continue
        run = step.result
        assert isinstance(run, TrainRun)
        runs.append(run)
        status = "" if step.status in ("done", "partial") else f" ({step.status})"
        if not run.evals:
            notes.append(f"{_seed(step)}{status}: no evaluation logged (reached agent step {run.last_step})")
            continue
        finals.append(run.evals[-1].mean)
        final_steps.append(run.evals[-1].env_step)
        if not run.finished:
            planned = f" of {fmt_steps(run.planned_steps * run.action_repeat)}" if run.planned_steps else ""
            why = "" if run.has_summary else ", no summary.json"
            notes.append(f"{_seed(step)}{status}: partial, curve to {fmt_steps(run.evals[-1].env_step)}{planned} "
                         f"env steps{why}")
        elif status:
            notes.append(f"{_seed(step)}: marked {step.status} although its run is complete")
    notes += _duplicate_seeds(steps)
    rates = [r.steps_per_s for r in runs if r.steps_per_s is not None]
    walls = [r.wall_time_s for r in runs if r.wall_time_s is not None]
    last_rates = [r.last_rate for r in runs if r.last_rate is not None]
    return TrainCell(env, variant, len(steps), stat(finals), final_steps, runs, stat(rates), stat(last_rates),
                     stat(walls), notes)


@dataclass
class ValueCell:
    """One number per seed (probe mean R², pretrain val accuracy, ...) of one variant."""

    variant: str
    env: str | None
    """The env its steps name (the data the encoder was trained or probed on); None if they name none."""
    expected: int
    values: dict[str, Stat | None]
    notes: list[str] = field(default_factory=list)
    extra: dict[str, str] = field(default_factory=dict)

    def seeds_text(self, key: str) -> str:
        s = self.values.get(key)
        n = s.n if s else 0
        return str(n) if n == self.expected else f"{n} of {self.expected}"


def probe_cell(variant: str, env: str | None, steps: Sequence[Step]) -> ValueCell:
    notes = [note for s in steps if (note := _missing_note(s)) is not None]
    probes = [s.result for s in steps if isinstance(s.result, ProbeRun)]
    tasks = sorted({t for p in probes for t in p.tasks})
    values = {"mean_r2": stat(p.mean_r2 for p in probes)}
    values.update({f"task:{t}": stat(p.tasks[t] for p in probes if t in p.tasks) for t in tasks})
    return ValueCell(variant, env, len(steps), values, notes)


def pretrain_cell(variant: str, env: str | None, steps: Sequence[Step]) -> ValueCell:
    notes = [note for s in steps if (note := _missing_note(s)) is not None]
    runs = [(s, s.result) for s in steps if isinstance(s.result, PretrainRun)]
    for step, run in runs:
        if run.exported and run.last_update == 0:
            notes.append(f"{_seed(step)}: exported untrained (an objective with nothing to train), no metrics")
        elif not run.exported:
            of = f" of {run.planned_updates}" if run.planned_updates else ""
            notes.append(f"{_seed(step)}: partial ({step.status}), {run.last_update}{of} updates, encoder not exported")
        if run.val_update is None and run.last_update > 0:
            notes.append(f"{_seed(step)}: no validation record")
    values = {"val/" + k: stat(r.val[k] for _, r in runs if k in r.val) for k in ("accuracy", "loss")}
    values.update({"ul/" + k: stat(r.train[k] for _, r in runs if k in r.train) for k in ("accuracy", "loss")})
    updates = [r.val_update for _, r in runs if r.val_update is not None]
    return ValueCell(variant, env, len(steps), values, notes, {"updates": fmt_range(updates)})


# --------------------------------------------------------------------------- comparisons


def compare(a_name: str, a: Stat, b_name: str, b: Stat, digits: int = 1) -> str:
    """A plain numeric comparison of two means, judged only against their own spreads."""
    diff = a.mean - b.mean
    head = (f"{a_name} {fmt_stat(a, digits, n=False)} (n={a.n}) vs {b_name} {fmt_stat(b, digits, n=False)} "
            f"(n={b.n}): difference {diff:+.{digits}f}")
    spreads = [s for s in (a.std, b.std) if s is not None]
    if not spreads:
        return head + "; single seeds, no spread to compare with"
    widest = max(spreads)
    if math.isclose(diff, 0.0, abs_tol=1e-12):
        return head + ", equal means"
    if abs(diff) > widest:
        return head + f", larger than the larger std ({widest:.{digits}f})"
    return head + f", within one std ({widest:.{digits}f})"
