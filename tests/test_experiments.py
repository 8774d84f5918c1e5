"""`atcrl experiment`: every plan is well formed and parses with the real command configs; a tiny
experiment runs end to end, resumes without redoing work, continues an interrupted training run,
and records a failing step while skipping its dependants and running independent steps."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import tyro

from atcrl import cpus
from atcrl.cli import COMMANDS
from atcrl.experiments import cost, plans, record, scales
from atcrl.experiments.cli import ExperimentConfig, dry_run, run_experiment
from atcrl.experiments.runner import Runner, thread_env
from atcrl.experiments.spec import SCALES, Experiment, PlanError, Step

ALL = [(name, scale) for name in plans.NAMES for scale in SCALES if scale != "gpu" or name in scales.GPU_EXPERIMENTS]
STEP_KEYS = {"id", "kind", "group", "variant", "seed", "env", "depends", "command", "out", "status", "returncode",
             "wall_time_s"}
TOP_KEYS = {"name", "scale", "seeds", "question", "notes", "created", "machine", "git_commit", "command", "steps"}


def config_class(kind: str) -> type:
    import importlib

    cmd = COMMANDS[kind]
    return getattr(importlib.import_module(cmd.module), cmd.config)


def flag(command: tuple[str, ...], name: str) -> str | None:
    return command[command.index(name) + 1] if name in command else None


@pytest.mark.parametrize(("name", "scale"), ALL)
def test_plan_is_well_formed(name, scale):
    exp = plans.build(name, scale)
    ids = [s.id for s in exp.steps]
    assert len(ids) == len(set(ids)) and exp.question and exp.notes
    outputs = {s.out: s for s in exp.steps}
    for i, step in enumerate(exp.steps):
        earlier = set(ids[:i])
        assert set(step.depends) <= earlier  # acyclic: dependencies come first
        # The command writes where the record says, and reads other steps' outputs only after them.
        assert flag(step.command, "--out") == step.out
        read = {tok for tok in step.command if tok in outputs and tok != step.out}
        assert read <= set(step.depends), f"{step.id} reads {read - set(step.depends)} without depending on it"
        assert step.seed in exp.seeds or step.group in ("expert", "demonstrations", "atari-expert",
                                                        "atari-demonstrations")
        if step.kind in ("train", "pretrain"):
            assert flag(step.command, "--seed") == str(step.seed)
        assert step.estimate_s > 0
    # Everything a scale compares is rendered one way, so encoders see the pixels the RL runs see.
    sac = [s for s in exp.steps if s.kind == "train" and "--sac.fast-render" in s.command]
    collects = [s for s in exp.steps if s.kind == "collect" and "--fast-render" in s.command]
    if scale in ("full", "gpu"):
        assert not sac and not collects
        paper_defaults = ("--sac.batch-size", "--sac.warmup-steps", "--eval-every", "--batch-size")
        assert not any(f in s.command for s in exp.steps for f in paper_defaults)
    elif scale == "cpu-small":
        dmc = [s for s in exp.steps if (s.env or "").startswith("dmc:")]
        assert all(s in sac or s in collects or s.kind in ("pretrain", "probe") for s in dmc)


PER_STEP = ("--out", "--seed", "--env", "--encoder", "--data", "--checkpoint")
"""Flags whose values name a step's own paths, seed or env: commands differing only there parse alike."""


def runnable_here(step: Step) -> bool:
    """False for the online DMLab runs while the recurrent PPO agent (ppo_lstm, presets dmlab-ppo*) is not
    in this tree; they parse, and are checked here, once it is."""
    from atcrl.train.algorithms import ALGORITHMS

    return step.group != "online-dmlab" or "ppo_lstm" in ALGORITHMS


def distinct_commands(exp: Experiment) -> list[Step]:
    seen, kept = set(), []
    for step in filter(runnable_here, exp.steps):
        shape = tuple("*" if i and step.command[i - 1] in PER_STEP else tok for i, tok in enumerate(step.command))
        if shape not in seen:
            seen.add(shape)
            kept.append(step)
    return kept


@pytest.mark.parametrize("name", plans.NAMES)
def test_every_command_parses_with_its_real_config(name):
    # Full plans repeat their commands per seed: one seed covers every distinct command line.
    gpu = (plans.build(name, "gpu", 1),) if name in scales.GPU_EXPERIMENTS else ()
    for exp in (plans.build(name, "full", 1), plans.build(name, "cpu-small"), plans.build(name, "tiny"), *gpu):
        for step in distinct_commands(exp):
            cfg = tyro.cli(config_class(step.kind), args=list(step.command[1:]))
            if step.kind == "train":
                assert cfg.out == step.out and cfg.seed == step.seed


def test_full_scale_uses_the_paper_run_lengths():
    exp = plans.build("online", "full", 1)
    steps = {s.env: int(flag(s.command, "--steps")) for s in exp.steps if s.group == "online-dmc"}
    # The reference's five online DMC tasks at its lengths (agent steps after the 1e4 warm-up), and nothing else.
    assert steps == {"dmc:cartpole-swingup": 47_500, "dmc:ball_in_cup-catch": 85_000, "dmc:cheetah-run": 260_000,
                     "dmc:walker-walk": 260_000, "dmc:hopper-hop": 260_000}
    beyond = {s.env: int(flag(s.command, "--steps")) for s in exp.steps if s.group == "online-dmc-beyond-paper"}
    assert beyond == {"dmc:finger-spin": 260_000, "dmc:reacher-easy": 135_000}  # 500k env steps + the warm-up
    ppo = [s for s in exp.steps if s.group == "online-atari"]
    assert ppo and all(flag(s.command, "--steps") == "25000000" for s in ppo)
    presets = {(s.env, flag(s.command, "--preset")) for s in ppo}
    assert {p for _, p in presets} == {"atari-ppo", "atari-ppo-atc", "atari-ppo-rl-atc", "atari-ppo-atc-init"}
    assert len(presets) == 4 * 4  # every variant on every game
    pre = [s for s in plans.build("ul-benchmark", "full", 1).steps if s.kind == "pretrain"]
    assert {s.variant for s in pre if s.group == "atari-pretrain"} >= {"pixel-control", "atc", "cpc"}
    assert "pixel-control" not in {s.variant for s in pre if s.group == "pretrain"}  # DMC: continuous actions


def test_multitask_cpu_small_leaves_one_domain_out_of_a_second_encoder_and_trains_it_there():
    exp = plans.build("multitask", "cpu-small", 1)
    steps = {s.id: s for s in exp.steps}
    data = lambda s: s.command[s.command.index("--data") + 1:s.command.index("--objective")]
    assert data(steps["pretrain-multi-task-s0"]) == ("demos-ball_in_cup-catch", "demos-cartpole-swingup",
                                                      "demos-cheetah-run", "demos-walker-walk")
    left_out = steps["pretrain-multi-task-without-cartpole-swingup-s0"]
    assert data(left_out) == ("demos-ball_in_cup-catch", "demos-cheetah-run", "demos-walker-walk")
    run = steps["frozen-multi-task-without-cartpole-swingup-cartpole-swingup-s0"]
    assert (run.group, run.env, run.depends) == ("frozen-unseen", "dmc:cartpole-swingup", (left_out.id,))
    assert flag(run.command, "--encoder") == left_out.id
    seen = {s.variant for s in exp.steps if s.group == "frozen-seen"}
    assert seen == {"end-to-end", "multi-task", "single-task", "random"}
    # The same RL size as every other cpu-small run, so the curves line up.
    assert all(flag(s.command, "--steps") == "4000" for s in exp.steps if s.kind == "train" and s.env.startswith("dmc:"))


def test_multitask_atari_holds_each_paper_game_out_of_an_encoder_of_the_other_seven():
    """Full scale: 8 games, each held out in turn; ATC for 5e4 updates on the other 7; frozen and fine-tuned PPO on
    the held-out game beside end-to-end PPO. cpu-small: one held-out game (Breakout), random-policy data, frozen."""
    from atcrl.experiments.multitask import ATARI_PAPER_GAMES

    exp = plans.build("multitask", "full", 1)
    steps = {s.id: s for s in exp.steps}
    data = lambda s: s.command[s.command.index("--data") + 1:s.command.index("--objective")]
    pre = [s for s in exp.steps if s.group == "atari-pretrain"]
    assert len(pre) == 8 and all(flag(s.command, "--updates") == "50000" for s in pre)
    assert all(flag(s.command, "--preset") == "atari" and flag(s.command, "--objective") == "atc" for s in pre)
    for env in ATARI_PAPER_GAMES:
        game = env.split(":")[1]
        p = steps[f"atari-pretrain-multi-task-without-{game}-s0"]
        assert set(data(p)) == {f"atari-demos-{g.split(':')[1]}" for g in ATARI_PAPER_GAMES} - {f"atari-demos-{game}"}
        for variant, preset in (("frozen", "atari-ppo-frozen"), ("fine-tune", "atari-ppo")):
            run = steps[f"atari-{variant}-multi-task-without-{game}-{game}-s0"]
            assert (run.env, flag(run.command, "--preset"), flag(run.command, "--encoder")) == (env, preset, p.id)
        assert flag(steps[f"atari-end-to-end-{game}-s0"].command, "--preset") == "atari-ppo"
    small = plans.build("multitask", "cpu-small", 1)
    atari = [s for s in small.steps if s.env.startswith("atari:")]
    assert {s.variant for s in atari if s.kind == "train"} == {"frozen", "end-to-end"}
    assert {s.env for s in atari if s.kind == "train"} == {"atari:Breakout"}
    assert all("--policy" in s.command for s in atari if s.kind == "collect")


def test_frozen_dmc_sac_keeps_pixel_replay_at_full_scale():
    """The reference's frozen RL replays pixels with random shift; the reduced scales replay cached latents."""
    for name in ("ul-benchmark", "multitask", "ablations"):
        for scale, pixels in (("full", True), ("cpu-small", False)):
            frozen = [s for s in plans.build(name, scale, 1).steps
                      if s.kind == "train" and flag(s.command, "--preset") == "dmc-frozen"]
            assert frozen and all(("--sac.latent-replay" in s.command) == pixels for s in frozen), (name, scale)


def test_cost_schedule_bounds():
    exp = plans.build("ul-benchmark", "cpu-small")
    total = cost.total_seconds(exp.steps)
    assert cost.wall_seconds(exp.steps, 1) == pytest.approx(total)
    two = cost.wall_seconds(exp.steps, 2)
    assert total / 2 <= two < total
    # The expert -> demonstrations -> pretrain -> frozen chain bounds any number of jobs from below.
    chain = sum(exp.step(i).estimate_s for i in ("expert-cartpole-swingup", "demos-cartpole-swingup",
                                                 "pretrain-stdim-s0", "frozen-stdim-cartpole-swingup-s0"))
    assert cost.wall_seconds(exp.steps, 100) >= chain


def test_dry_run_prints_every_command_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "exp"
    cfg = ExperimentConfig("ablations", scale="cpu-small", out=str(out), dry_run=True)
    assert run_experiment(cfg) == 0
    printed = capsys.readouterr().out
    exp = plans.build("ablations", "cpu-small")
    for step in exp.steps:
        assert "atcrl " + shlex.join(step.command) in printed
    assert not out.exists()


def test_list_names_every_experiment(capsys):
    assert run_experiment(ExperimentConfig(list_experiments=True)) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in plans.NAMES) and printed.count("cpu-small:") == len(plans.NAMES)


def test_bad_options_are_refused(tmp_path, capsys):
    assert run_experiment(ExperimentConfig("online", scale="tiny", data=str(tmp_path), dry_run=True)) == 2
    assert run_experiment(ExperimentConfig("latent-replay", scale="tiny", encoder=str(tmp_path / "none"),
                                           dry_run=True)) == 2
    assert run_experiment(ExperimentConfig("ul-benchmark", scale="tiny", data=str(tmp_path), dry_run=True)) == 2
    assert "error" in capsys.readouterr().err


def test_record_merge_grows_seeds_but_refuses_other_plans():
    one = plans.build("latent-replay", "tiny", 1)
    old = record.new_record(one, ["atcrl"])
    old["steps"][0].update(status="done", returncode=0, wall_time_s=3.0)
    grown = record.merge(old, plans.build("latent-replay", "tiny", 2), ["atcrl"])
    assert grown["steps"][0]["status"] == "done" and len(grown["steps"]) > len(old["steps"])
    assert {s["status"] for s in grown["steps"][1:]} == {"pending"}
    with pytest.raises(PlanError, match="at scale"):
        record.merge(old, plans.build("latent-replay", "cpu-small", 1), ["atcrl"])
    with pytest.raises(PlanError, match="does not have"):
        record.merge(grown, one, ["atcrl"])


def test_steps_share_the_cores_unless_told(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cpus, "_usable_cpus", lambda: {0, 1, 2, 3})
    assert thread_env(1)["OMP_NUM_THREADS"] == thread_env(1)["MKL_NUM_THREADS"] == "4"
    assert thread_env(2)["OMP_NUM_THREADS"] == "2"
    assert thread_env(3)["OMP_NUM_THREADS"] == "1"
    assert thread_env(8)["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert thread_env(1)["OMP_NUM_THREADS"] == "2"


def _load(out: Path) -> dict:
    return json.loads((out / record.RECORD).read_text())


def test_tiny_experiment_runs_resumes_and_continues_training(tmp_path):
    out = tmp_path / "ul"
    cfg = ExperimentConfig("ul-benchmark", scale="tiny", out=str(out), jobs=2)
    assert run_experiment(cfg) == 0
    rec = _load(out)
    assert rec.keys() >= TOP_KEYS and rec["scale"] == "tiny" and rec["seeds"] == [0]
    assert rec["command"][:3] == ["atcrl", "experiment", "ul-benchmark"]
    kinds = set()
    for s in rec["steps"]:
        assert s.keys() >= STEP_KEYS and s["status"] == "done" and s["returncode"] == 0 and s["wall_time_s"] > 0
        kinds.add(s["kind"])
    assert kinds == {"collect", "pretrain", "probe", "train"}
    probe = json.loads((out / "probe-atc-s0.json").read_text())
    assert -10 < probe["mean_r2"] <= 1
    rows = [json.loads(line) for line in (out / "pretrain-atc-s0" / "metrics.jsonl").read_text().splitlines()]
    assert any("val/accuracy" in r for r in rows)
    frozen = out / "frozen-atc-point-s0"
    rows = [json.loads(line) for line in (frozen / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/return_mean" in r for r in rows)
    assert "action_repeat" in json.loads((frozen / "config.json").read_text())

    # Re-running skips every finished step: no log grows, no state changes.
    logs = {p.name: p.stat().st_size for p in out.glob("*.log")}
    assert run_experiment(cfg) == 0
    assert {p.name: p.stat().st_size for p in out.glob("*.log")} == logs
    assert [s["started"] for s in _load(out)["steps"]] == [s["started"] for s in rec["steps"]]

    # A training run the runner lost track of mid-way is continued from its checkpoint, nothing else reruns.
    rec["steps"][[s["id"] for s in rec["steps"]].index(frozen.name)]["status"] = "running"
    (out / record.RECORD).write_text(json.dumps(rec))
    (frozen / "summary.json").unlink()
    assert run_experiment(cfg) == 0
    after = {s["id"]: s for s in _load(out)["steps"]}
    assert after[frozen.name]["ran_command"][-2:] == ["--resume", frozen.name]
    assert after[frozen.name]["status"] == "done" and (frozen / "summary.json").is_file()
    grew = {p.name for p in out.glob("*.log") if p.stat().st_size != logs[p.name]}
    assert grew == {f"{frozen.name}.log"}


def test_failed_step_skips_dependants_and_not_the_rest(tmp_path):
    collect = ("collect", "--env", "tiny:point", "--episodes", "1", "--image-size", "16", "--append", "--out")
    steps = (
        Step("probe-missing", "probe", "probe", "atc", 0, "tiny:point",
             ("probe", "--encoder", "no-such-encoder", "--data", "no-such-data", "--out", "probe-missing.json")),
        Step("after-probe", "collect", "demonstrations", "random", 0, "tiny:point", (*collect, "after-probe"),
             depends=("probe-missing",)),
        Step("independent", "collect", "demonstrations", "random", 0, "tiny:point", (*collect, "independent")),
    )
    exp = Experiment("ul-benchmark", "tiny", (0,), "q", "n", steps)
    lines: list[str] = []
    assert Runner(exp, tmp_path, jobs=2, echo=lines.append).run() == 1
    states = {s["id"]: s for s in _load(tmp_path)["steps"]}
    assert states["probe-missing"]["status"] == "failed" and states["probe-missing"]["returncode"] == 2
    assert "no-such-data" in states["probe-missing"]["log_tail"]
    assert states["after-probe"]["status"] == "skipped" and not (tmp_path / "after-probe").exists()
    assert states["independent"]["status"] == "done" and (tmp_path / "independent" / "meta.json").is_file()
    assert any("FAILED" in line and "probe-missing" in line for line in lines)


def test_list_and_dry_run_give_the_gpu_cost_or_say_not_measured(capsys):
    assert run_experiment(ExperimentConfig(list_experiments=True)) == 0
    printed = capsys.readouterr().out
    listed = 2 * len(plans.NAMES) + len(scales.GPU_EXPERIMENTS)
    assert printed.count("    one GPU: ") == listed and printed.count("    cpu: ") == listed
    assert cost.GPU_MEASURED in printed and "not measured" in printed
    online = plans.build("online", "full", 1)
    sac = [s for s in online.steps if s.group == "online-dmc" and not s.env.startswith("dmc:cheetah")]
    assert sac and all(s.gpu_estimate_s is not None for s in sac)
    assert all(s.gpu_estimate_s is None for s in online.steps if s.group == "online-atari")  # PPO: not measured
    # cartpole at the paper's length: 10k warm-up + 48 evaluations of 10 episodes at the env rate, 37.5k updates.
    cartpole = next(s for s in sac if s.env == "dmc:cartpole-swingup")
    expected = cost.STARTUP_S + (10_000 + 48 * 10 * 125) / cost.GPU_ENV_RATE + 37_500 / cost.GPU_SAC_RATE["decoupled"]
    assert cartpole.gpu_estimate_s == pytest.approx(expected)
    pretrain_only = [s for s in plans.build("ablations", "tiny").steps if s.kind == "pretrain"]
    assert cost.gpu_line(pretrain_only).startswith("not measured")


def test_device_is_passed_to_the_steps_that_compute_and_not_recorded_in_the_plan(tmp_path):
    collect = Step("d", "collect", "demonstrations", "random", 0, "tiny:point",
                   ("collect", "--env", "tiny:point", "--episodes", "4", "--image-size", "32", "--append", "--out", "d"))
    probe = Step("p", "probe", "probe", "random", 0, "tiny:point",
                 ("probe", "--encoder", "random", "--data", "d", "--out", "p.json", "--arch", "dmc", "--seed", "0"),
                 depends=("d",))
    exp = Experiment("ablations", "tiny", (0,), "q", "n", (collect, probe))
    assert Runner(exp, tmp_path, jobs=2, device="cpu", echo=lambda _: None).run() == 0
    states = {s["id"]: s for s in _load(tmp_path)["steps"]}
    assert states["p"]["ran_command"][-2:] == ["--device", "cpu"] and "--device" not in states["p"]["command"]
    assert "--device" not in states["d"]["ran_command"]  # collection takes no device


def test_ray_options_need_the_ray_executor(capsys):
    assert run_experiment(ExperimentConfig("online", scale="tiny", gpus_per_step=0.5)) == 2
    assert "apply to --executor ray only" in capsys.readouterr().err


def test_ul_benchmark_runs_the_vae_at_the_references_three_deltas_at_full_scale():
    full = plans.build("ul-benchmark", "full", 1)
    vae = {s.variant: flag(s.command, "--delta-t") if "--delta-t" in s.command else None
           for s in full.steps if s.kind == "pretrain" and s.group == "pretrain" and s.variant.startswith("vae")}
    assert vae == {"vae": None, "vae-dt1": "1", "vae-dt3": "3"}  # Δ = 0 is the VAE's default
    frozen = {s.variant for s in full.steps if s.group == "frozen-rl"}
    assert {"vae", "vae-dt1", "vae-dt3"} <= frozen
    atari = {s.variant for s in full.steps if s.group == "atari-pretrain"}
    assert {"vae", "vae-dt1", "vae-dt3"} <= atari
    small = [s.variant for s in plans.build("ul-benchmark", "cpu-small", 1).steps if s.kind == "pretrain"]
    assert "vae" in small and not any(v.startswith("vae-dt") for v in small)


def test_gpu_scale_runs_the_papers_settings_with_its_named_reductions(tmp_path, capsys):
    online = plans.build("online", "gpu")
    assert online.seeds == (0, 1, 2, 3) and {s.env for s in online.steps} == {"dmc:cartpole-swingup"}
    assert sorted({s.variant for s in online.steps}) == ["decoupled-atc", "end-to-end"] and len(online.steps) == 8
    for step in online.steps:  # the paper's run length, batch, warm-up, evaluation and rendering: no flag overrides
        assert flag(step.command, "--steps") == "47500"
        assert not {"--sac.batch-size", "--sac.warmup-steps", "--eval-every", "--eval-episodes",
                    "--sac.fast-render"} & set(step.command)
    bench = plans.build("ul-benchmark", "gpu")
    by_id = {s.id: s for s in bench.steps}
    assert flag(by_id["expert-cartpole-swingup"].command, "--steps") == "50000"
    assert flag(by_id["demos-cartpole-swingup"].command, "--episodes") == "400"
    assert flag(by_id["probe-data-cartpole-swingup"].command, "--episodes") == "40"
    pretrains = [s for s in bench.steps if s.kind == "pretrain"]
    assert {s.variant for s in pretrains} >= {"atc", "cpc", "vae", "vae-dt1", "vae-dt3"}
    assert not any({"--updates", "--batch-size"} & set(s.command) for s in pretrains)  # the DMC preset's budget
    assert not any((s.env or "").startswith("atari:") for s in bench.steps)
    for name, exp in (("online", online), ("ul-benchmark", bench)):
        assert all(r in exp.notes for r in scales.GPU_REDUCTIONS[name])
        assert run_experiment(ExperimentConfig(name, scale="gpu", out=str(tmp_path / name), dry_run=True,
                                               jobs=8)) == 0
        printed = capsys.readouterr().out
        assert scales.GPU_REDUCTIONS[name][0] in printed and "--jobs 8" in printed
    assert "atcrl train --preset dmc-atc --env dmc:cartpole-swingup --seed 3" in dry_run(online, tmp_path, 8)
    with pytest.raises(PlanError, match="has no gpu scale"):
        plans.build("multitask", "gpu")
    assert run_experiment(ExperimentConfig(list_experiments=True)) == 0
    listing = capsys.readouterr().out
    online_gpu = listing.split("online\n")[1].split("  gpu:\n")[1].split("\n\n")[0]
    assert "one GPU: about" in online_gpu and "(with 8: not measured)" in online_gpu
    assert "gpu: none (only online, ul-benchmark have a gpu scale)" in listing
