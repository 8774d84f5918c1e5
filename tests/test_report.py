"""`atcrl report`: aggregation over seeds against hand computation, env-step scaling, anchors, partial and
failed steps, unreadable files, bad input, and a report on a real (tiny) training run."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import tyro

from atcrl.cli import main as atcrl
from atcrl.report.anchors import anchors_for
from atcrl.report.cli import ReportConfig, run_report
from atcrl.report.load import read_experiment
from atcrl.report.stats import Stat, compare, mean_curve, train_cell

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- fixture files (the contract's format)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def train_dir(path: Path, env: str, returns: list[float], *, repeat: int, every: int = 500, planned: int | None = None,
              seed: int = 0, preset: str = "dmc-atc", summary: bool = True, wall: float = 100.0) -> Path:
    """A train run: an evaluation every `every` agent steps with the given returns, training rows between."""
    last = every * (len(returns) - 1)
    planned = last if planned is None else planned
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({
        "algo": "sac", "preset": preset, "action_repeat": repeat, "kind": "train",
        "loop": {"env": env, "mode": "decoupled", "steps": planned, "seed": seed, "action_repeat": 0}}))
    rows = []
    for i, ret in enumerate(returns):
        step = i * every
        if step:
            rows.append({"step": step, "time": 1000.0 + step, "rl/episode_return": ret - 5, "perf/steps_per_s": 20.0 + i})
        rows.append({"step": step, "time": 1000.0 + step, "eval/return_mean": ret, "eval/return_std": 1.0})
    write_jsonl(path / "metrics.jsonl", rows)
    if summary:
        (path / "summary.json").write_text(json.dumps({"steps": last, "env_steps": last * repeat, "wall_time_s": wall}))
    return path


def pretrain_dir(path: Path, objective: str, val_acc: float, val_loss: float, updates: int = 200) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"kind": "pretrain", "config": {"objective": objective},
                                                  "optim": {"total_updates": updates}}))
    write_jsonl(path / "metrics.jsonl", [
        {"step": 100, "ul/loss": 3.0, "ul/accuracy": 0.1},
        {"step": 100, "val/loss": 9.0, "val/accuracy": 0.0},
        {"step": updates, "ul/loss": 2.0, "ul/accuracy": 0.5},
        {"step": updates, "val/loss": val_loss, "val/accuracy": val_acc}])
    (path / "encoder.json").write_text("{}")
    return path


def probe_file(path: Path, r2: dict[str, list[float]]) -> Path:
    tasks = {t: {"r2": v, "mean_r2": sum(v) / len(v)} for t, v in r2.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"encoder": "x", "mean_r2": sum(t["mean_r2"] for t in tasks.values()) / len(tasks),
                                "tasks": tasks}))
    return path


def step(id_: str, kind: str, group: str, variant: str, seed: int, out: str, *, env: str | None = None,
         status: str = "done", returncode: int | None = 0, wall: float | None = 12.0) -> dict:
    return {"id": id_, "kind": kind, "group": group, "variant": variant, "seed": seed, "env": env, "depends": [],
            "command": [kind, "--seed", str(seed), "--out", out], "out": out, "status": status,
            "returncode": returncode, "wall_time_s": wall}


def experiment(root: Path, steps: list[dict], name: str = "cartpole-modes") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "experiment.json").write_text(json.dumps({
        "name": name, "scale": "cpu-small", "seeds": [0, 1, 2], "question": "does decoupling match end-to-end?",
        "notes": "fixture", "created": "2025-01-01T00:00:00", "git_commit": "abc1234",
        "machine": {"cpu": "test", "cores": 2, "torch": "2", "python": "3.12", "platform": "linux"},
        "command": ["atcrl", "experiment", "cartpole-modes", "--scale", "cpu-small"], "steps": steps}))
    return root


ENV = "dmc:cartpole-swingup"


def modes_experiment(root: Path) -> Path:
    """decoupled-atc: seeds 0, 1 done. end-to-end: seed 0 done, seed 1 failed half-way, seed 2 pending."""
    train_dir(root / "runs/atc-0", ENV, [10.0, 200.0, 500.0], repeat=8, seed=0)
    train_dir(root / "runs/atc-1", ENV, [12.0, 260.0, 540.0], repeat=8, seed=1)
    train_dir(root / "runs/e2e-0", ENV, [11.0, 150.0, 480.0], repeat=8, seed=0)
    train_dir(root / "runs/e2e-1", ENV, [9.0, 100.0], repeat=8, seed=1, planned=1000, summary=False)
    (root / "e2e-1.log").write_text("step 500\nFloatingPointError: the critic loss is NaN\n\n")
    return experiment(root, [
        step("atc-0", "train", "modes", "decoupled-atc", 0, "runs/atc-0", env=ENV),
        step("atc-1", "train", "modes", "decoupled-atc", 1, "runs/atc-1", env=ENV),
        step("e2e-0", "train", "modes", "end-to-end", 0, "runs/e2e-0", env=ENV),
        {**step("e2e-1", "train", "modes", "end-to-end", 1, "runs/e2e-1", env=ENV, status="failed", returncode=1),
         "log": "e2e-1.log"},
        step("e2e-2", "train", "modes", "end-to-end", 2, "runs/e2e-2", env=ENV, status="pending", returncode=None,
             wall=None),
    ])


def report(tmp_path: Path, *inputs: Path | str, capsys=None) -> tuple[int, str]:
    out = tmp_path / "report"
    code = run_report(tyro.cli(ReportConfig, args=[*map(str, inputs), "--out", str(out)]))
    text = (out / "report.md").read_text() if (out / "report.md").exists() else ""
    return code, text


def assert_pngs(report_dir: Path, text: str) -> list[Path]:
    names = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert names, "the report references no figure"
    for name in names:
        data = (report_dir / name).read_bytes()
        assert data[:8] == PNG_SIGNATURE and len(data) > 5_000, name
    return [report_dir / n for n in names]


# --------------------------------------------------------------------------- aggregation


def test_final_return_is_mean_and_sample_std_over_seeds_and_curves_count_env_steps(tmp_path):
    exp = read_experiment(modes_experiment(tmp_path / "exp"), problems := [])
    assert problems == []
    steps = [s for s in exp.steps if s.variant == "decoupled-atc"]
    cell = train_cell(ENV, "decoupled-atc", steps)
    assert cell.final.n == 2 and cell.final.mean == pytest.approx(520.0)
    assert cell.final.std == pytest.approx(math.sqrt(((500 - 520) ** 2 + (540 - 520) ** 2) / 1))
    assert cell.final_env_steps == [8000, 8000]  # agent step 1000 x action repeat 8
    assert cell.steps_per_s.mean == pytest.approx(1000 / 100.0)  # agent steps / summary wall time
    assert cell.last_rate.mean == pytest.approx(22.0)  # the newest logged perf/steps_per_s
    curve = mean_curve(cell.runs, "minmax")
    assert curve.x.tolist() == [0, 4000, 8000]
    assert curve.mean.tolist() == pytest.approx([11.0, 230.0, 520.0])
    assert curve.lo.tolist() == [10.0, 200.0, 500.0] and curve.hi.tolist() == [12.0, 260.0, 540.0]
    band = mean_curve(cell.runs, "std")
    assert (band.hi - band.mean).tolist() == pytest.approx([math.sqrt(2), math.sqrt(1800), math.sqrt(800)])


def test_partial_failed_and_pending_seeds_are_counted_and_described(tmp_path):
    exp = read_experiment(modes_experiment(tmp_path / "exp"), [])
    cell = train_cell(ENV, "end-to-end", [s for s in exp.steps if s.variant == "end-to-end"])
    # The failed seed's last evaluation (100 at 4k env steps) still counts; the pending one has nothing.
    assert cell.final.n == 2 and cell.final.mean == pytest.approx((480.0 + 100.0) / 2)
    assert cell.seeds_text == "2 of 3" and cell.final_env_steps == [8000, 4000]
    notes = "\n".join(cell.notes)
    assert "e2e-1 (seed 1) (failed): partial, curve to 4k of 8k env steps, no summary.json" in notes
    assert "e2e-2 (seed 2): pending, no readable output" in notes


def test_comparisons_state_the_difference_against_the_larger_std():
    assert compare("a", Stat(512, 40, 2), "b", Stat(480, 60, 2)).endswith("difference +32.0, within one std (60.0)")
    assert "larger than the larger std (10.0)" in compare("a", Stat(100, 10, 3), "b", Stat(50, 5, 3))
    assert "single seeds" in compare("a", Stat(1, None, 1), "b", Stat(2, None, 1))


def test_anchors_are_the_papers_numbers_by_task():
    cartpole = anchors_for("dmc:cartpole-swingup")
    assert (cartpole[("CURL", 100_000)].mean, cartpole[("CURL", 100_000)].std) == (582, 146)
    assert (cartpole[("DrQ", 100_000)].mean, cartpole[("DrQ", 100_000)].std) == (759, 92)
    assert cartpole[("DrQ", 500_000)].mean == 868 and cartpole[("DrQ", 500_000)].std is None
    assert anchors_for("dmc:ball_in_cup-catch")[("CURL", 500_000)].mean == 959
    assert anchors_for("tiny:point") == {} and anchors_for("dmc:hopper-hop") == {}


# --------------------------------------------------------------------------- the document


def test_an_experiment_report_has_header_curves_table_anchors_status_and_claims(tmp_path):
    code, text = report(tmp_path, modes_experiment(tmp_path / "exp"))
    assert code == 0
    for needle in ("## Experiment: cartpole-modes", "does decoupling match end-to-end?", "cpu-small", "abc1234",
                   "atcrl experiment cartpole-modes --scale cpu-small", "atcrl train --seed 1 --out runs/atc-1"):
        assert needle in text, needle
    row = next(line for line in text.splitlines() if line.startswith(f"| {ENV} | decoupled-atc |"))
    assert "520.0 ± 28.3" in row and "| 8k |" in row
    assert "582 ± 146" not in text and "Quoted figures" not in text  # published 100k/500k figures: not at 8k
    e2e = next(line for line in text.splitlines() if line.startswith(f"| {ENV} | end-to-end |"))
    assert "| 2 of 3 |" in e2e and "4k–8k" in e2e
    # Steps that are not done are listed with their status and exit code.
    assert re.search(r"\| e2e-1 \| train \| end-to-end \| 1 \| failed \| 1 \|", text)
    assert re.search(r"\| e2e-2 \| train \| end-to-end \| 2 \| pending \| — \|", text)
    assert "e2e-1 failed; last line of" in text and "`FloatingPointError: the critic loss is NaN`" in text
    claims = text.split("### Comparisons")[1]
    assert "decoupled-atc 520.0 ± 28.3 (n=2) vs end-to-end 290.0 ± 268.7 (n=2): difference +230.0, within one std" \
        in claims
    assert_pngs(tmp_path / "report", text)


def test_steps_that_read_a_replaced_output_are_flagged(tmp_path):
    root = modes_experiment(tmp_path / "exp")
    record = json.loads((root / "experiment.json").read_text())
    record["steps"][0].update(output_hash="sha256:" + "a" * 64)
    record["steps"][1].update(inputs={"runs/atc-0": "sha256:" + "b" * 64})  # read an earlier version
    record["steps"][2].update(inputs={"runs/atc-0": "sha256:" + "a" * 64})  # read the current one
    (root / "experiment.json").write_text(json.dumps(record))
    code, text = report(tmp_path, root)
    assert code == 0
    assert "- atc-1 read `runs/atc-0` at bbbbbbbbbbbb, but atc-0 now records aaaaaaaaaaaa" in text
    assert "e2e-0 read" not in text


def test_published_figures_appear_only_in_their_own_rows_at_our_budget(tmp_path):
    runs = tmp_path / "runs"
    train_dir(runs / "atc-0", ENV, [0.0, 300.0, 600.0], repeat=8, every=6250, seed=0)  # 12.5k agent = 100k env steps
    train_dir(runs / "walk-0", "dmc:walker-walk", [0.0, 50.0], repeat=2, seed=0)  # 1k env steps: none quoted
    code, text = report(tmp_path, runs)
    assert code == 0
    quoted = text.split("| quoted method | env | env steps | final return (quoted, not our runs) |")[1].split("\n\n")[0]
    assert f"| CURL | {ENV} | 100k | 582 ± 146 |" in quoted and f"| DrQ | {ENV} | 100k | 759 ± 92 |" in quoted
    assert "500k" not in quoted and "walker" not in quoted
    row = next(line for line in text.splitlines() if line.startswith(f"| {ENV} | dmc-atc |"))
    assert "582" not in row  # never in the rows of our runs


def test_probe_pretrain_and_frozen_rl_groups_are_tabulated_and_joined_by_variant(tmp_path):
    root = tmp_path / "bench"
    steps = []
    r2 = {"atc": [(0.8, 0.6), (0.7, 0.5)], "ac": [(0.4, 0.2), (0.5, 0.1)]}
    for variant, seeds in r2.items():
        for seed, (a, b) in enumerate(seeds):
            probe_file(root / f"probe/{variant}-{seed}.json", {"cartpole": [a, b]})
            pretrain_dir(root / f"pre/{variant}-{seed}", variant, val_acc=0.5 + 0.1 * seed, val_loss=2.0)
            train_dir(root / f"rl/{variant}-{seed}", ENV, [0.0, 100.0 * (seed + 1)], repeat=8, seed=seed)
            steps += [step(f"pre-{variant}-{seed}", "pretrain", "ul", variant, seed, f"pre/{variant}-{seed}"),
                      step(f"probe-{variant}-{seed}", "probe", "ul", variant, seed, f"probe/{variant}-{seed}.json",
                           env=ENV),
                      step(f"rl-{variant}-{seed}", "train", "frozen", variant, seed, f"rl/{variant}-{seed}", env=ENV)]
    code, text = report(tmp_path, experiment(root, steps, name="ul-benchmark"))
    assert code == 0
    # atc: per-seed mean R^2 0.7 and 0.6 -> 0.65 ± 0.0707; ac: 0.3 and 0.3 -> 0.3 ± 0.
    assert re.search(r"\| atc \| 2 \| 0\.650 ± 0\.071 \|", text)
    assert re.search(r"\| ac \| 2 \| 0\.300 ± 0\.000 \|", text)
    assert re.search(r"\| atc \| 2 \| 0\.550 ± 0\.071 \| 2\.000 ± 0\.000 \|", text)  # pretrain val acc, loss
    joined = text.split("### frozen: final return beside the probe and pretraining")[1]
    assert f"| {ENV} | atc | 150.0 ± 70.7 (n=2) | 0.650 ± 0.071 (n=2) | 0.550 ± 0.071 (n=2) |" in joined
    assert (f"probe mean R² (ul-benchmark ul) on {ENV}: atc 0.650 ± 0.071 (n=2) vs ac 0.300 ± 0.000 (n=2): difference +0.350, "
            "larger") in text
    assert len(assert_pngs(tmp_path / "report", text)) == 3  # curves, probe bars, pretrain bars


def test_plain_run_directories_are_grouped_by_env_and_preset(tmp_path):
    runs = tmp_path / "runs"
    train_dir(runs / "atc-0", ENV, [0.0, 300.0], repeat=8, seed=0)
    train_dir(runs / "atc-1", ENV, [0.0, 500.0], repeat=8, seed=1)
    train_dir(runs / "rad-0", ENV, [0.0, 200.0], repeat=8, seed=0, preset="dmc-rad")
    train_dir(runs / "walk-0", "dmc:walker-walk", [0.0, 50.0], repeat=2, seed=0)
    code, text = report(tmp_path, runs)  # a directory whose children are runs
    assert code == 0
    assert re.search(rf"\| {ENV} \| dmc-atc \| 2 \| 400\.0 ± 141\.4 \| 4k \|", text)
    assert re.search(rf"\| {ENV} \| dmc-rad \| 1 \| 200\.0 \| 4k \|", text)
    assert re.search(r"\| dmc:walker-walk \| dmc-atc \| 1 \| 50\.0 \| 1k \|", text)
    assert_pngs(tmp_path / "report", text)


def test_a_run_without_evaluation_is_reported_by_its_training_returns(tmp_path):
    """PPO runs with --eval-episodes 0 (the cpu-small Atari runs) log only training episodes' raw scores."""
    run = train_dir(tmp_path / "ppo", "atari:Breakout", [0.0], repeat=4, planned=1200)
    returns = [float(i) for i in range(12)]  # one log per 100 agent steps
    write_jsonl(run / "metrics.jsonl", [{"step": 100 * (i + 1), "time": 1000.0 + i, "rl/episode_return": r,
                                         "perf/steps_per_s": 50.0} for i, r in enumerate(returns)])
    (run / "summary.json").write_text(json.dumps({"steps": 1200, "env_steps": 4800, "wall_time_s": 60.0}))
    code, text = report(tmp_path, run)
    assert code == 0
    # The last point is the mean of the last 10 logged intervals (2..11), at the last logged step.
    assert re.search(r"\| atari:Breakout \| \S+ \| 1 \| 6\.5 \| 4\.8k \|", text), text
    assert "training episodes' raw score instead" in text and "no evaluation logged" not in text
    assert "final training score (mean ± std)" in text and "final eval return" not in text
    assert_pngs(tmp_path / "report", text)


# --------------------------------------------------------------------------- robustness


def test_corrupt_and_missing_files_are_named_and_the_rest_is_reported(tmp_path, capsys):
    root = modes_experiment(tmp_path / "exp")
    with (root / "runs/atc-1/metrics.jsonl").open("a") as f:
        f.write('{"step": 1500, "eval/ret\n')  # a torn line
    (root / "runs/atc-0/config.json").write_text("{not json")
    train_dir(tmp_path / "noeval", ENV, [0.0], repeat=8, planned=1000, summary=False)  # replaced: never evaluated
    write_jsonl(tmp_path / "noeval/metrics.jsonl", [{"step": 100, "perf/steps_per_s": 3.0}])
    code, text = report(tmp_path, root, tmp_path / "noeval")
    assert code == 0
    err = capsys.readouterr().err
    for needle in (f"{root / 'runs/atc-0/config.json'}: corrupt", f"{root / 'runs/atc-1/metrics.jsonl'}: skipped 1"):
        assert needle in err and needle.replace(str(tmp_path), "..") in text  # the report names it from its folder
    assert "atc-0 (seed 0): done, no readable output" in text
    assert "noeval (seed 0): no evaluation logged (reached agent step 100)" in text
    assert re.search(rf"\| {ENV} \| decoupled-atc \| 1 of 2 \| 540\.0 \|", text)


@pytest.mark.parametrize("case", ["missing", "empty", "unreadable"])
def test_bad_input_exits_2_naming_it(tmp_path, capsys, case):
    target = tmp_path / "x"
    if case == "empty":
        target.mkdir()
    elif case == "unreadable":
        target.mkdir()
        (target / "config.json").write_text("[1, 2")
    code, _ = report(tmp_path, target)
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "report/report.md").exists()
    assert str(target) in err


# --------------------------------------------------------------------------- a real run


def test_a_report_on_a_real_tiny_training_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert atcrl(["train", "--env", "tiny:point", "--steps", "200", "--out", str(run), "--sac.image-size", "32",
                  "--sac.frame-stack", "1", "--sac.action-repeat", "2", "--sac.warmup-steps", "40",
                  "--sac.batch-size", "16", "--sac.agent.hidden", "16", "16", "--sac.agent.latent-dim", "8",
                  "--sac.replay-capacity", "500", "--sac.log-every", "50", "--eval-every", "100",
                  "--eval-episodes", "1", "--no-tensorboard"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    code, text = report(tmp_path, run)
    assert code == 0
    row = next(line for line in text.splitlines() if line.startswith("| tiny:point | dmc-atc |"))
    assert f"| 1 | {summary['last_eval_return']:.1f} | 400 |" in row  # agent step 200 x action repeat 2
    assert "Partial or missing" not in text  # a finished run is not partial
    assert_pngs(tmp_path / "report", text)


def test_a_report_on_real_pretrain_and_probe_outputs(tmp_path):
    data, pre = tmp_path / "data", tmp_path / "pre"
    assert atcrl(["collect", "--env", "tiny:point", "--episodes", "6", "--image-size", "32", "--max-steps", "30",
                  "--out", str(data)]) == 0
    assert atcrl(["pretrain", "--data", str(data), "--out", str(pre), "--updates", "20", "--batch-size", "16",
                  "--eval-every", "10", "--log-every", "10", "--val-fraction", "0.3", "--no-tensorboard"]) == 0
    assert atcrl(["probe", "--encoder", str(pre), "--data", str(data), "--out", str(tmp_path / "probe.json")]) == 0
    probe = json.loads((tmp_path / "probe.json").read_text())
    val = [r for r in map(json.loads, (pre / "metrics.jsonl").read_text().splitlines()) if "val/loss" in r][-1]
    code, text = report(tmp_path, pre, tmp_path / "probe.json")
    assert code == 0
    assert re.search(rf"\| atc \| 1 \| {val['val/accuracy']:.3f} \| {val['val/loss']:.3f} \| .* \| 20 \|", text)
    assert f"| probe | 1 | {probe['mean_r2']:.3f} |" in text
    assert len(assert_pngs(tmp_path / "report", text)) == 2


def test_a_variant_probed_on_two_envs_gets_a_row_per_env_not_pooled_seeds(tmp_path):
    root = tmp_path / "probes"
    steps = []
    for env, r2 in (("dmc:cartpole-swingup", 0.9), ("dmc:walker-walk", 0.1)):
        for seed in (0, 1):
            out = f"{env[4:]}-{seed}.json"
            probe_file(root / out, {env: [r2 + 0.01 * seed]})
            steps.append(step(f"{env}-{seed}", "probe", "probe", "atc", seed, out, env=env))
    code, text = report(tmp_path, experiment(root, steps))
    assert code == 0
    assert "| env | variant | seeds | mean R² (mean ± std) |" in text
    assert "| dmc:cartpole-swingup | atc | 2 | 0.905 ± 0.007 |" in text
    assert "| dmc:walker-walk | atc | 2 | 0.105 ± 0.007 |" in text


def test_probe_targets_are_tabulated_with_intervals_beside_the_random_baseline(tmp_path):
    root = tmp_path / "bench"
    names = ["slider", "hinge_1.sin", "hinge_1.cos"]

    def task(r2, ci):
        return {"targets": names, "r2": r2, "r2_ci": ci, "mean_r2": sum(r2) / 3, "mean_r2_ci": [0.1, 0.9],
                "test_episodes": 12}

    atc = task([0.9, 0.8, 0.7], [[0.85, 0.95], [0.7, 0.85], [0.6, 0.75]])
    own = task([0.3, 0.2, 0.1], [[0.2, 0.4], [0.1, 0.3], [0.0, 0.2]])
    (root / "probe").mkdir(parents=True)
    (root / "probe/atc-0.json").write_text(json.dumps({"encoder": "x", "mean_r2": 0.8, "tasks": {ENV: atc},
                                                       "baseline": {"mean_r2": 0.2, "tasks": {ENV: own}}}))
    (root / "probe/ac-0.json").write_text(json.dumps({"encoder": "y", "mean_r2": 0.8, "tasks": {ENV: atc}}))
    (root / "probe/random-0.json").write_text(json.dumps({"encoder": "random", "mean_r2": 0.5,
                                                          "tasks": {ENV: task([0.5, 0.4, 0.6], [[0.4, 0.6]] * 3)}}))
    steps = [step(f"probe-{v}-0", "probe", "probe", v, 0, f"probe/{v}-0.json", env=ENV) for v in ("atc", "ac", "random")]
    code, text = report(tmp_path, experiment(root, steps, name="ul-benchmark"))
    assert code == 0
    # atc's own --baseline; ac falls back to the random variant's probe of seed 0; the random variant has none.
    assert f"| atc | 0 | {ENV} | hinge_1.sin | 0.800 [0.700, 0.850] | 0.200 [0.100, 0.300] | 12 |" in text
    assert f"| ac | 0 | {ENV} | hinge_1.sin | 0.800 [0.700, 0.850] | 0.400 [0.400, 0.600] | 12 |" in text
    assert f"| random | 0 | {ENV} | slider | 0.500 [0.400, 0.600] | — | 12 |" in text
    assert f"| atc | 0 | {ENV} | mean | 0.800 [0.100, 0.900] | 0.200 [0.100, 0.900] | 12 |" in text
