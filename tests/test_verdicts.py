"""Statistics with rliable and the claim verdicts: intervals against hand computation, each verdict on synthetic
scores, the seeds that would decide an undecided claim, and the claims naming what the plans run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_report import ENV, experiment, report, step, train_dir

from atcrl.experiments import plans
from atcrl.report.claims import CLAIMS
from atcrl.report.intervals import Scores, difference, improvement, mean_and_iqm, scores, seeds_to_decide
from atcrl.report.verdicts import decide


def arm(*per_task: list[float]) -> Scores:
    """Scores of one variant: one list of per-seed values per task."""
    return scores({f"task{t}": dict(enumerate(values)) for t, values in enumerate(per_task)})


def test_scores_keep_the_seeds_every_task_has():
    s = scores({"a": {0: 1.0, 1: 2.0, 2: 3.0}, "b": {1: 5.0, 2: 6.0}})
    assert s.seeds == (1, 2) and s.tasks == ("a", "b") and s.matrix.tolist() == [[2.0, 5.0], [3.0, 6.0]]
    assert scores({"a": {0: 1.0}, "b": {1: 2.0}}) is None


def test_mean_iqm_and_difference_intervals():
    values = [100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 700.0, 800.0]
    mean, iqm = mean_and_iqm(arm(values))
    assert mean.value == pytest.approx(450.0) and iqm.value == pytest.approx(450.0)  # middle 4: 300..600
    assert mean.lo < 450.0 < mean.hi and 200.0 < mean.lo and mean.hi < 700.0
    skewed = arm([0.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 1000.0])
    assert mean_and_iqm(skewed)[1].value == pytest.approx(10.0)  # IQM ignores the outliers
    d = difference(arm(values), arm([v - 50.0 for v in values]))
    assert d.value == pytest.approx(50.0) and d.lo < 50.0 < d.hi
    assert mean_and_iqm(arm(values)) == mean_and_iqm(arm(values))  # a fixed seed: a rebuild reproduces it
    state = np.random.get_state()[1].copy()
    mean_and_iqm(arm(values))
    assert (np.random.get_state()[1] == state).all()  # and the caller's generator is left alone


def test_probability_of_improvement_is_rliables():
    from rliable import metrics

    rng = np.random.default_rng(1)
    for shape_x, shape_y in (((5, 3), (4, 3)), ((2, 1), (3, 1))):
        x, y = rng.integers(0, 4, shape_x).astype(float), rng.integers(0, 4, shape_y).astype(float)  # with ties
        assert improvement(x, y) == pytest.approx(metrics.probability_of_improvement(x, y))
    same = rng.standard_normal((3, 2))
    assert improvement(same, same) == pytest.approx(0.5)


def test_each_verdict_from_synthetic_scores():
    rng = np.random.default_rng(0)
    high = arm(list(800 + 10 * rng.standard_normal(5)), list(700 + 10 * rng.standard_normal(5)))
    low = arm(list(500 + 10 * rng.standard_normal(5)), list(400 + 10 * rng.standard_normal(5)))
    supported = decide(high, low)
    assert supported.outcome == "supported" and supported.text() == "supported"
    assert supported.diff.lo > 0 and supported.poi.lo > 0.5 and supported.tasks == ("task0", "task1")
    contradicted = decide(low, high)
    assert contradicted.outcome == "contradicted" and contradicted.diff.hi < 0 and contradicted.poi.hi < 0.5

    # Overlapping arms, 3 seeds: undecided, and the seeds that would decide it follow from the spread.
    a, b = arm([510.0, 400.0, 620.0]), arm([480.0, 380.0, 600.0])
    undecided = decide(a, b)
    assert undecided.outcome == "undecided" and undecided.diff.lo < 0 < undecided.diff.hi
    var = np.var([510, 400, 620], ddof=1) + np.var([480, 380, 600], ddof=1)
    expected = int(np.ceil(1.96 ** 2 * var / (np.mean([510, 400, 620]) - np.mean([480, 380, 600])) ** 2))
    assert undecided.seeds_needed == seeds_to_decide(a, b) == expected == 171
    assert undecided.text() == ("undecided at 3 seeds; about 171 seeds per variant would decide it at the observed "
                                "difference and spread")


def test_one_seed_never_decides():
    one = decide(arm([900.0]), arm([100.0]))  # a bootstrap over one run is a point: it must not count as a CI
    assert one.outcome == "undecided" and one.seeds_needed is None
    assert one.text() == "undecided at 1 seed (at least 2 seeds per variant are needed to measure the spread)"
    assert decide(arm([5.0, 5.0]), arm([5.0, 5.0])).text() == "undecided at 2 seeds (no difference observed)"
    assert decide(None, arm([1.0])).text().startswith("undecided at 0 seeds (no finished runs")


@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_claims_name_groups_and_variants_a_plan_runs(name):
    present = {(s.group, s.variant) for scale in ("full", "cpu-small") for s in plans.build(name, scale, 2).steps}
    for claim in CLAIMS[name]:
        assert claim.better in present and claim.worse in present, claim.text


def test_the_report_states_each_claim_with_its_verdict(tmp_path):
    root = tmp_path / "online"
    steps = []
    finals = {"decoupled-atc": [600.0, 640.0, 620.0], "end-to-end": [300.0, 320.0, 280.0]}
    for variant, values in finals.items():
        for seed, final in enumerate(values):
            out = f"{variant}-s{seed}"
            train_dir(root / out, ENV, [0.0, final], repeat=8, seed=seed)
            steps.append(step(out, "train", "online-dmc", variant, seed, out, env=ENV))
    # A partial run does not count towards the verdict.
    train_dir(root / "partial", ENV, [0.0, 5.0], repeat=8, seed=3, planned=2000, summary=False)
    steps.append(step("partial", "train", "online-dmc", "end-to-end", 3, "partial", env=ENV, status="failed"))
    experiment(root, steps, name="online")
    code, text = report(tmp_path, root)
    assert code == 0
    verdicts = text.split("### Claim verdicts (computed from the data)")[1]
    row = next(line for line in verdicts.splitlines() if line.startswith("| Decoupled ATC"))
    assert "| final return | 3 vs 3 | 1 | 320.0 [" in row and row.endswith("| **supported** |")
    stats = text.split("Final return over finished runs")[1].split("\n\n")[1]
    assert "| decoupled-atc | 1 | 3 | 620.0 [" in stats and "| end-to-end | 1 | 3 | 300.0 [" in stats
    assert "Atari" not in verdicts  # a claim without steps in this experiment is not shown
    assert json.loads((root / "experiment.json").read_text())["name"] == "online"


def test_a_single_seed_report_says_undecided_at_one_seed(tmp_path):
    root = tmp_path / "online"
    steps = []
    for variant, final in (("decoupled-atc", 600.0), ("end-to-end", 300.0)):
        train_dir(root / variant, ENV, [0.0, final], repeat=8)
        steps.append(step(variant, "train", "online-dmc", variant, 0, variant, env=ENV))
    experiment(root, steps, name="online")
    code, text = report(tmp_path, root)
    assert code == 0 and "**undecided at 1 seed (at least 2 seeds per variant" in text
    assert Path(tmp_path / "report" / "report.md").is_file()
