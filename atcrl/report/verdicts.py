"""The paper's claims, each decided from the data: supported, contradicted, or undecided at n seeds.

A claim says variant A scores higher than variant B (final return of finished runs, or probe mean R²).
It is

- *supported* when the 95% CI of mean(A) − mean(B) lies above 0, or the CI of the probability of
  improvement P(A > B) lies above 0.5;
- *contradicted* when either lies below (0, resp. 0.5) — and neither lies above;
- *undecided at n seeds* otherwise, or when a variant has fewer than MIN_SEEDS runs (one run has
  no spread to compare the difference with, and a bootstrap over it is a point). The verdict then
  says how many seeds per variant would decide it at the observed difference and spread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from atcrl.report.intervals import (
    Estimate,
    Scores,
    difference,
    probability_of_improvement,
    scores,
    seeds_to_decide,
)
from atcrl.report.load import Step
from atcrl.report.runs import ProbeRun, TrainRun

Outcome = Literal["supported", "contradicted", "undecided"]
Metric = Literal["final return", "probe mean R²"]
MIN_SEEDS = 2


@dataclass(frozen=True)
class Claim:
    """A claim of the paper as a comparison: ``better`` scores higher than ``worse`` on ``metric``."""

    text: str
    metric: Metric
    better: tuple[str, str]
    """(group, variant) of the steps that should score higher."""
    worse: tuple[str, str]


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    n_better: int
    n_worse: int
    tasks: tuple[str, ...]
    diff: Estimate | None
    """mean(better) − mean(worse) with its CI; None without runs of both."""
    poi: Estimate | None
    seeds_needed: int | None
    """Undecided: seeds per variant that would decide it at the observed difference and spread."""

    @property
    def n(self) -> int:
        return min(self.n_better, self.n_worse)

    def text(self) -> str:
        if self.outcome != "undecided":
            return self.outcome
        head = f"undecided at {self.n} seed{'s' if self.n != 1 else ''}"
        if self.diff is None:
            return head + " (no finished runs of both variants on a common task)"
        if self.n < MIN_SEEDS:
            return head + f" (at least {MIN_SEEDS} seeds per variant are needed to measure the spread)"
        if self.seeds_needed is None:
            return head + " (no difference observed)"
        return head + f"; about {self.seeds_needed} seeds per variant would decide it at the observed difference and spread"


def decide(better: Scores | None, worse: Scores | None) -> Verdict:
    """The verdict on "better > worse" from two variants' scores (runs × the same tasks)."""
    if better is None or worse is None:
        return _nothing(better, worse)
    diff, poi = difference(better, worse), probability_of_improvement(better, worse)
    outcome: Outcome = "undecided"
    if min(better.n, worse.n) >= MIN_SEEDS:
        up, down = diff.lo > 0 or poi.lo > 0.5, diff.hi < 0 or poi.hi < 0.5
        if up != down:
            outcome = "supported" if up else "contradicted"
    needed = None
    if outcome == "undecided" and (k := seeds_to_decide(better, worse)) is not None:
        needed = max(k, min(better.n, worse.n) + 1)
    return Verdict(outcome, better.n, worse.n, better.tasks, diff, poi, needed)


def _nothing(a: Scores | None, b: Scores | None) -> Verdict:
    """Undecided for want of runs of both variants on a common task."""
    return Verdict("undecided", a.n if a else 0, b.n if b else 0, (), None, None, None)


def step_score(step: Step, metric: Metric) -> float | None:
    """A step's score on ``metric``: a finished train run's last evaluation (or training score), a probe's R²."""
    run = step.result
    if metric == "final return":
        return run.evals[-1].mean if isinstance(run, TrainRun) and run.finished and run.evals else None
    return run.mean_r2 if isinstance(run, ProbeRun) else None


def variant_scores(steps: Sequence[Step], group: str, variant: str, metric: Metric,
                   tasks: set[str] | None = None) -> Scores | None:
    """The scores of one (group, variant): task -> seed -> score, over ``tasks`` when given."""
    kind = "train" if metric == "final return" else "probe"
    values: dict[str, dict[int, float]] = {}
    for s in steps:
        if ((s.kind, s.group, s.variant) == (kind, group, variant) and s.seed is not None and s.env is not None
                and (tasks is None or s.env in tasks) and (v := step_score(s, metric)) is not None):
            values.setdefault(s.env, {})[s.seed] = v
    return scores(values)


def judge(claim: Claim, steps: Sequence[Step]) -> Verdict:
    """The claim decided on the tasks both variants have finished runs on."""
    a = variant_scores(steps, *claim.better, claim.metric)
    b = variant_scores(steps, *claim.worse, claim.metric)
    common = set(a.tasks) & set(b.tasks) if a and b else set()
    if not common:
        return _nothing(a, b)
    return decide(variant_scores(steps, *claim.better, claim.metric, common),
                  variant_scores(steps, *claim.worse, claim.metric, common))
