"""The report's statistics and verdicts: per group, IQM and mean over seeds (and tasks) with 95% stratified
bootstrap CIs and performance profiles; per experiment, each claim's verdict with its interval and seed count.

Only finished runs count here (a train run that reached its planned steps, a probe that wrote its result);
the tables above them also show partial runs, marked as such.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from atcrl.report import plots
from atcrl.report.claims import CLAIMS
from atcrl.report.intervals import REPS, mean_and_iqm, performance_profiles
from atcrl.report.load import Step
from atcrl.report.tables import md_table
from atcrl.report.verdicts import MIN_SEEDS, Claim, Metric, judge, variant_scores

if TYPE_CHECKING:
    from atcrl.report.document import Doc

METHOD = (f"95% CIs: rliable's stratified bootstrap over seeds within each task, {REPS} resamples, fixed seed. "
          "IQM: the mean of the middle 50% of runs × tasks.")


def statistics(doc: Doc, steps: Sequence[Step], group: str, metric: Metric, label: str) -> None:
    """The group's table of mean and IQM with CIs per variant, and its performance profiles when several tasks."""
    variants = list(dict.fromkeys(s.variant for s in steps))
    found = {v: sc for v in variants if (sc := variant_scores(steps, group, v, metric)) is not None}
    if not found:
        return
    digits = 1 if metric == "final return" else 3
    rows = []
    for variant, sc in found.items():
        mean, iqm = mean_and_iqm(sc)
        rows.append([variant, str(len(sc.tasks)), str(sc.n), mean.text(digits), iqm.text(digits)])
    doc.add(f"{metric.capitalize()} over finished runs (seeds present on every task of the variant):", "",
            md_table(["variant", "tasks", "seeds", "mean [95% CI]", "IQM [95% CI]"], rows), "", METHOD, "")
    if len({t for sc in found.values() for t in sc.tasks}) > 1:
        common = set.intersection(*(set(sc.tasks) for sc in found.values()))
        same = {v: sc for v in found if (sc := variant_scores(steps, group, v, metric, common)) is not None}
        if len(common) > 1 and same:
            taus, profiles = performance_profiles(same)
            path = plots.profiles(doc.figure_path(label, "profiles"), taus, profiles, metric,
                                  f"{label}: performance profiles over {len(common)} tasks")
            doc.figure(path, f"{label} performance profiles")


def claims(exp_name: str, steps: Sequence[Step]) -> list[Claim]:
    """The experiment's claims whose both sides have steps here."""
    present = {(s.group, s.variant) for s in steps}
    return [c for c in CLAIMS.get(exp_name, ()) if c.better in present and c.worse in present]


def verdicts(doc: Doc, exp_name: str, steps: Sequence[Step]) -> None:
    """The verdict table of the experiment's claims."""
    found = claims(exp_name, steps)
    if not found:
        return
    rows = []
    for c in found:
        v = judge(c, steps)
        digits = 1 if c.metric == "final return" else 3
        rows.append([c.text, c.metric, f"{v.n_better} vs {v.n_worse}", str(len(v.tasks)),
                     v.diff.text(digits) if v.diff else "—", v.poi.text(2) if v.poi else "—", f"**{v.text()}**"])
    doc.add("### Claim verdicts (computed from the data)", "", md_table(
        ["claim", "metric", "seeds", "tasks", "difference of means [95% CI]", "P(improvement) [95% CI]", "verdict"],
        rows), "", "Supported: the CI of the difference lies above 0, or the CI of the probability of improvement "
        "lies above 0.5; contradicted: either lies below and neither above; otherwise undecided (also with fewer "
        f"than {MIN_SEEDS} seeds per variant). Seeds needed: n = 1.96² (s²₁ + s²₂) / d² per variant from the "
        "observed per-seed spread s and difference d (a normal approximation). " + METHOD, "")
