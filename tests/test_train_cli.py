"""`atcrl train` / `atcrl evaluate`: preset resolution, typed overrides, outputs, save -> load, bad input."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import tyro

from atcrl.checkpoint import list_checkpoints, load_checkpoint
from atcrl.cli import main as atcrl
from atcrl.encoder_io import export_encoder, load_encoder
from atcrl.envs import make_env
from atcrl.metrics_log import read_jsonl
from atcrl.nets.encoders import ConvEncoder
from atcrl.rl.modes import EncoderMode
from atcrl.train.evaluate import actor
from atcrl.train.rl_checkpoint import build_agent, load_trained, write_run_info
from atcrl.train.train_plan import TrainConfig, resolve
from atcrl.train.train_session import Session, build, describe_run

SIZE = 32
SAC_TINY = ["--env", "tiny:point", "--sac.image-size", str(SIZE), "--sac.frame-stack", "1", "--sac.warmup-steps", "40",
            "--sac.batch-size", "32", "--sac.agent.hidden", "32", "32", "--sac.agent.latent-dim", "8",
            "--sac.replay-capacity", "2000", "--sac.log-every", "40", "--eval-every", "80", "--eval-episodes", "2",
            "--no-tensorboard"]
PPO_TINY = ["--env", "tiny:catch", "--ppo.image-size", str(SIZE), "--ppo.encoder", "dmc", "--ppo.num-envs", "4",
            "--ppo.horizon", "32", "--ppo.ul-start-steps", "0", "--ppo.rl-start-steps", "128",
            "--ppo.ul-replay-size", "800", "--ppo.atc.batch-size", "32", "--ppo.agent.hidden", "32",
            "--ppo.agent.minibatches", "2", "--eval-every", "256", "--eval-episodes", "3", "--no-tensorboard"]
TINY = {"sac": SAC_TINY, "ppo": PPO_TINY}


def parse(args: list[str]) -> TrainConfig:
    return tyro.cli(TrainConfig, args=args)


def fails(capsys, args: list[str], *needles: str) -> str:
    assert atcrl(["train", *args]) == 2
    err = capsys.readouterr().err
    assert all(n in err for n in needles), err
    return err


# --- resolution: paper defaults < preset < flags --------------------------------------------------------


def test_no_arguments_mean_decoupled_atc_sac_on_cartpole_with_the_paper_settings():
    pytest.importorskip("dm_control")
    plan = resolve(TrainConfig())
    loop = plan.loop
    assert (plan.preset, plan.algo, loop.env, loop.mode, loop.ul) == (
        "dmc-atc", "sac", "dmc:cartpole-swingup", EncoderMode.decoupled, "atc")
    assert loop.steps == 37_500 + 10_000 and loop.batch_size == 256 and loop.image_size == 84
    assert (plan.eval_every, plan.eval_episodes) == (1000, 10) and loop.sac.q_lr == 1e-3
    assert plan.obs_shape == (9, 84, 84)


def test_flags_override_single_nested_fields_and_keep_the_rest_of_the_preset():
    pytest.importorskip("dm_control")
    cheetah = resolve(parse(["--preset", "dmc-rad", "--env", "dmc:cheetah-run"])).loop
    assert cheetah.mode is EncoderMode.end_to_end and cheetah.batch_size == 512 and cheetah.sac.q_lr == 2e-4
    changed = resolve(parse(["--preset", "dmc-rad", "--env", "dmc:cheetah-run", "--sac.batch-size", "64",
                             "--sac.agent.hidden", "16", "16", "--steps", "123", "--seed", "7"])).loop
    assert (changed.batch_size, changed.sac.hidden, changed.steps, changed.seed) == (64, (16, 16), 123, 7)
    assert changed.sac.q_lr == 2e-4 and changed.mode is EncoderMode.end_to_end  # untouched preset values


def test_a_discrete_env_picks_ppo_and_the_ppo_presets_set_the_paper_variants():
    plan = resolve(parse(["--env", "tiny:catch"]))
    assert (plan.preset, plan.algo, plan.loop.mode, plan.loop.ul) == ("atari-ppo-atc", "ppo", EncoderMode.decoupled,
                                                                      "atc")
    rl_only = resolve(parse(["--env", "tiny:catch", "--preset", "atari-ppo"])).loop
    assert rl_only.mode is EncoderMode.end_to_end and rl_only.ul == "none"
    init = resolve(parse(["--env", "tiny:catch", "--preset", "atari-ppo-atc-init"])).loop
    assert init.ul_schedule == "front" and init.ul_updates_at(init.start_iterations()[0]) == 10_000
    assert init.start_iterations()[1] == init.start_iterations()[0] + 1  # RL starts right after the ATC block


def test_bad_presets_envs_and_option_groups_are_refused_with_what_to_do(capsys, tmp_path):
    fails(capsys, ["--preset", "dmc-atcc"], "unknown training preset 'dmc-atcc'", "Did you mean: dmc-atc")
    fails(capsys, ["--preset", "dmc-rad", "--env", "tiny:catch"], "discrete actions", "atari-ppo-atc")
    fails(capsys, ["--preset", "atari-ppo", "--env", "tiny:point"], "continuous actions", "dmc-rad")
    fails(capsys, ["--env", "gym:CartPole-v1"], "is not an image")
    fails(capsys, ["--env", "tiny:point", "--ppo.horizon", "8"], "--ppo.* options (horizon)", "trains SAC")
    fails(capsys, ["--preset", "dmc-frozen", "--env", "tiny:point"], "--encoder FILE")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("in_shape", [(9, 40, 40), (3, SIZE, SIZE)], ids=["size", "channels"])
def test_a_frozen_encoder_of_another_shape_is_refused_naming_both(capsys, tmp_path, in_shape):
    path = export_encoder(ConvEncoder("dmc", in_shape), tmp_path / "enc", objective="atc", data=[])
    out = tmp_path / "run"
    fails(capsys, ["--preset", "dmc-frozen", "--encoder", str(path), *SAC_TINY[:4], "--out", str(out)],
          str(in_shape), "(9, 32, 32)", "tiny:point at image size 32 with 3 stacked 3-channel frames")
    assert not out.exists()


# --- a run's outputs, frozen weights, NaN ----------------------------------------------------------------


def test_frozen_training_leaves_the_encoder_bit_identical_and_export_gives_it_back(tmp_path, capsys):
    torch.manual_seed(3)
    encoder = ConvEncoder("dmc", (3, SIZE, SIZE))
    path = export_encoder(encoder, tmp_path / "enc", objective="atc", data=[])
    run = tmp_path / "frozen"
    assert atcrl(["train", "--preset", "dmc-frozen", "--encoder", str(path), *SAC_TINY, "--steps", "120",
                  "--out", str(run)]) == 0
    state = load_checkpoint(run / "checkpoints", kind="train").state
    assert state["step"] == 120 and state["run"]["agent"]["updates"] == 80
    weights = state["run"]["agent"]["modules"]
    assert all(torch.equal(weights["encoder." + k], v) for k, v in encoder.state_dict().items())
    assert atcrl(["export", "--run", str(run), "--out", str(tmp_path / "back.safetensors")]) == 0
    back = load_encoder(tmp_path / "back.safetensors")
    assert all(torch.equal(back.state_dict()[k], v) for k, v in encoder.state_dict().items())
    info = json.loads((tmp_path / "back.json").read_text())
    assert info["objective"] == "sac frozen" and info["data"] == ["tiny:point"]


def test_a_ppo_run_writes_namespaced_metrics_evaluations_videos_and_a_summary(tmp_path, capsys):
    run = tmp_path / "ppo"
    assert atcrl(["train", *PPO_TINY, "--steps", "512", "--video-every", "256", "--ckpt-every", "256",
                  "--out", str(run)]) == 0
    out = capsys.readouterr().out
    assert "steps/s" in out and "last eval return" in out
    rows = read_jsonl(run / "metrics.jsonl")
    names = {k.split("/")[0] for r in rows for k in r if k not in ("step", "time")}
    assert names == {"rl", "ul", "eval", "perf"}
    evals = [r["step"] for r in rows if "eval/return_mean" in r]
    assert evals == [128, 256, 512]  # the first iteration, every 256 steps, and the end
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 512 and summary["last_eval_step"] == 512 and summary["steps_per_s"] > 0
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [256, 512]
    videos = sorted(p.name for p in (run / "videos").iterdir())
    assert videos == ["step_00000128.gif", "step_00000256.gif", "step_00000512.gif"]
    frames = iio.imread(run / "videos" / videos[-1])
    assert frames.ndim == 4 and 1 < len(frames) <= 10 and frames.shape[1] >= 256  # <= 9 steps + reset, enlarged


def test_a_loss_turning_inf_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    run = tmp_path / "nan"
    # alpha = 1e38 makes the soft target ~1e38, whose square overflows float32 on the first update.
    assert atcrl(["train", *SAC_TINY, "--steps", "200", "--ckpt-every", "40", "--sac.agent.initial-alpha", "1e38",
                  "--out", str(run)]) == 3
    err = capsys.readouterr().err
    assert "critic loss is inf" in err and "last good checkpoint" in err and "ckpt_000040.pt" in err
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [40]
    assert load_checkpoint(run / "checkpoints", kind="train").state["run"]["agent"]["updates"] == 0


# --- save -> load -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("algo", ["sac", "ppo"])
def test_a_checkpointed_agent_acts_exactly_like_the_one_that_was_saved(tmp_path, algo):
    cfg = parse([*TINY[algo], "--steps", "128" if algo == "ppo" else "60", "--out", str(tmp_path)])
    plan = resolve(cfg)
    run = build(plan)
    info = describe_run(cfg, plan, run)
    write_run_info(tmp_path, info)
    if algo == "sac":
        from atcrl.train.sac_loop import train
    else:
        from atcrl.train.ppo_loop import train
    train(run)
    session = Session(cfg, plan, tmp_path, run, info, None)
    session.checkpoint()
    session.close()
    loaded = load_trained(tmp_path)
    fresh = build_agent(info)
    env = make_env(plan.loop.env, seed=1, **info.env_kwargs())
    obs, _ = env.reset()
    observations = [obs] + [env.step(env.action_space.sample())[0] for _ in range(8)]

    def actions(agent, explore=False):
        act = actor(agent, explore=explore, generator=torch.Generator().manual_seed(5) if explore else None)
        return np.array([act(o) for o in observations], dtype=np.float64)

    assert np.array_equal(actions(run.agent), actions(loaded.agent))
    assert np.array_equal(actions(run.agent, True), actions(loaded.agent, True))
    if algo == "sac":  # a fresh agent's continuous actions differ, so the check above has teeth
        assert not np.array_equal(actions(run.agent), actions(fresh))
    assert loaded.step == run.step


def test_evaluate_prints_mean_and_std_and_writes_a_video(tmp_path, capsys):
    run = tmp_path / "sac"
    assert atcrl(["train", *SAC_TINY, "--steps", "80", "--out", str(run)]) == 0
    capsys.readouterr()
    assert atcrl(["evaluate", "--run", str(run), "--episodes", "3", "--video", str(tmp_path / "v.gif")]) == 0
    out = capsys.readouterr().out
    assert "3 deterministic episodes: return" in out and "±" in out and "step 80" in out
    frames = iio.imread(tmp_path / "v.gif")
    # 50 steps + the reset frame (GIF merges identical neighbours), 32 px enlarged x8
    assert 1 < len(frames) <= 51 and frames.shape[1:] == (256, 256, 3)
    assert atcrl(["evaluate", "--run", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert atcrl(["evaluate", "--run", str(run), "--video", str(tmp_path / "v.avi")]) == 2
    assert ".gif or .mp4" in capsys.readouterr().err


def test_collect_from_a_train_run_acts_deterministically_or_with_its_exploration(tmp_path, capsys):
    from atcrl.data.dataset import open_dataset

    run = tmp_path / "sac"
    assert atcrl(["train", *SAC_TINY, "--steps", "80", "--out", str(run)]) == 0

    def collect(name: str, *extra: str) -> np.ndarray:
        assert atcrl(["collect", "--checkpoint", str(run), "--episodes", "1", "--out", str(tmp_path / name),
                      "--max-steps", "10", *extra]) == 0
        ep = open_dataset(tmp_path / name)[0]
        assert ep.frames.shape == (11, 3, SIZE, SIZE) and ep.task == "tiny:point"  # the run's env and size
        return ep.actions

    greedy, explore, again = collect("greedy"), collect("explore", "--explore"), collect("again", "--explore")
    assert np.array_equal(explore, again) and not np.array_equal(greedy, explore)  # seeded noise, not greedy
    assert atcrl(["collect", "--checkpoint", str(run), "--episodes", "1", "--out", str(tmp_path / "x"),
                  "--image-size", "40"]) == 2
    assert "trained on 32 px images" in capsys.readouterr().err
    assert atcrl(["collect", "--checkpoint", str(run), "--env", "tiny:catch", "--episodes", "1",
                  "--out", str(tmp_path / "y")]) == 2
    assert "reads (3, 32, 32) observations" in capsys.readouterr().err
