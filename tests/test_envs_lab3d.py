"""The DeepMind Lab-shaped families: miniworld: (the stand-in) and dmlab:, frame sizes, and non-square frames
through the encoder, the augmentation and the PPO loop."""

from __future__ import annotations

import importlib.util
from dataclasses import replace

import numpy as np
import pytest
import torch

from atcrl.envs import FAMILIES, env_meta, make_env, make_vec_env
from atcrl.envs.dmlab import DMLAB_ACTIONS, action_table, level_path
from atcrl.envs.lab3d import LAB_FRAME, STAND_INS, miniworld_tasks
from atcrl.envs.registry import frame_size
from atcrl.nets.augment import _shift, random_shift
from atcrl.nets.encoders import ConvEncoder

needs_miniworld = pytest.mark.skipif(importlib.util.find_spec("miniworld") is None, reason="miniworld missing")
has_dmlab = importlib.util.find_spec("deepmind_lab") is not None


# --------------------------------------------------------------------------- frame sizes


def test_frame_size_is_the_family_default_a_square_or_a_pair():
    assert frame_size("dmc", None) == (84, 84) and frame_size("tiny", None) == (84, 84)
    assert frame_size("miniworld", None) == frame_size("dmlab", None) == LAB_FRAME == (72, 96)
    assert frame_size("miniworld", 64) == (64, 64)
    assert frame_size("dmc", (48, 64)) == (48, 64) and frame_size("dmc", [48, 64]) == (48, 64)


@pytest.mark.parametrize("bad,match", [(4, ">= 8"), ((72, 4), ">= 8"), ((72, 96, 3), "height, width"),
                                       (True, "height, width"), ((72, 9.5), "ints"), ("84", "height, width")])
def test_bad_frame_sizes_are_refused_in_one_line(bad, match):
    with pytest.raises(ValueError, match=match) as err:
        frame_size("miniworld", bad)
    assert "\n" not in str(err.value)


def test_a_square_only_family_refuses_a_non_square_frame():
    with pytest.raises(ValueError, match="square frames only"):
        make_env("tiny:point", image_size=(32, 48))


def test_dmc_renders_non_square_frames():
    pytest.importorskip("dm_control")
    env = make_env("dmc:cartpole-swingup", seed=0, image_size=(48, 64), fast_render=True)
    obs, _ = env.reset()
    assert obs.shape == (9, 48, 64)


# --------------------------------------------------------------------------- miniworld: the stand-in


@needs_miniworld
def test_four_rooms_has_the_dmlab_shape_by_default():
    env = make_env("miniworld:FourRooms", seed=0)
    meta = env_meta(env)
    assert (meta.family, meta.frame_channels, meta.frame_stack, meta.action_repeat) == ("miniworld", 3, 1, 4)
    assert meta.discrete and env.action_space.n == 3 and meta.physics_dim == 4
    assert meta.max_episode_steps == 63  # MiniWorld's 250 underlying steps / repeat 4, rounded up
    obs, _ = env.reset()
    assert obs.shape == (3, 72, 96) and obs.dtype == np.uint8
    assert env.unwrapped.observation_space.shape == (72, 96, 3)  # rendered at 72x96, not resized
    env.step(2)
    assert env.unwrapped.step_count == 4  # one agent step = 4 MiniWorld steps


@needs_miniworld
def test_four_rooms_reports_the_agent_pose_as_physics():
    env = make_env("miniworld:FourRooms", seed=1)
    assert env_meta(env).physics_dim == 4
    _, info = env.reset()
    agent = env.unwrapped.agent
    x, z, c, s = info["physics"]
    assert (x, z) == (agent.pos[0], agent.pos[2]) and np.isclose(c * c + s * s, 1.0)
    _, _, _, _, turned = env.step(0)  # turn left: heading changes, position does not
    assert np.allclose(turned["physics"][:2], (x, z)) and not np.allclose(turned["physics"][2:], (c, s))
    _, _, _, _, moved = env.step(2)  # forward (unless a wall is right there): position changes
    assert not np.allclose(moved["physics"][:2], turned["physics"][:2])


@needs_miniworld
def test_four_rooms_is_reproducible_under_a_seed_and_honours_explicit_sizes():
    a, b = make_env("miniworld:FourRooms", seed=3), make_env("miniworld:FourRooms", seed=3)
    np.testing.assert_array_equal(a.reset()[0], b.reset()[0])
    np.testing.assert_array_equal(a.step(1)[0], b.step(1)[0])
    assert make_env("miniworld:FourRooms", image_size=40).observation_space.shape == (3, 40, 40)
    assert make_env("miniworld:FourRooms", image_size=(36, 48), frame_stack=2).observation_space.shape == (6, 36, 48)


@needs_miniworld
def test_every_stand_in_is_a_miniworld_task_and_unknown_names_get_close_matches():
    assert set(STAND_INS) <= set(miniworld_tasks())
    assert make_env("miniworld:PickupObjects").action_space.n == 5
    with pytest.raises(ValueError, match="FourRooms"):
        make_env("miniworld:FourRoom")


@needs_miniworld
def test_vector_env_keeps_the_non_square_frame():
    env = make_vec_env("miniworld:FourRooms", 2, seed=0)
    obs, _ = env.reset()
    assert obs.shape == (2, 3, 72, 96) and env_meta(env).frame_stack == 1
    env.close()


# --------------------------------------------------------------------------- dmlab:


@pytest.mark.skipif(has_dmlab, reason="deepmind_lab is installed")
def test_dmlab_without_deepmind_lab_says_what_to_install_in_one_line():
    with pytest.raises(ImportError, match="deepmind_lab.*bazel") as err:
        make_env("dmlab:explore_goal_locations_small")
    assert "\n" not in str(err.value)
    assert FAMILIES["dmlab"].install in str(err.value)


def test_dmlab_level_names_and_action_set():
    assert level_path("explore_goal_locations_small") == "contributed/dmlab30/explore_goal_locations_small"
    assert level_path("tests/empty_room_test") == "tests/empty_room_test"
    # The Lab's action spec order decides the columns; every action is a distinct non-zero row.
    spec = [{"name": n} for n in ("MOVE_BACK_FORWARD", "FIRE", "LOOK_LEFT_RIGHT_PIXELS_PER_FRAME",
                                  "STRAFE_LEFT_RIGHT", "LOOK_DOWN_UP_PIXELS_PER_FRAME", "JUMP", "CROUCH")]
    table = action_table(spec)
    assert table.shape == (9, 7) and len({tuple(r) for r in table}) == 9 and (np.abs(table).sum(1) > 0).all()
    assert table[[label for label, _ in DMLAB_ACTIONS].index("forward + look left")].tolist() == [1, 0, -20, 0, 0, 0, 0]
    with pytest.raises(ValueError, match="FIRE"):
        action_table([entry for entry in spec if entry["name"] != "FIRE"])


@pytest.mark.skipif(not has_dmlab, reason="needs DeepMind Lab's deepmind_lab module (bazel build)")
def test_dmlab_level_has_the_reference_shape():
    env = make_env("dmlab:explore_goal_locations_small", seed=0)
    meta = env_meta(env)
    assert (meta.frame_stack, meta.action_repeat, env.action_space.n) == (1, 4, 9)
    obs, _ = env.reset()
    assert obs.shape == (3, 72, 96)
    assert env.step(0)[0].shape == (3, 72, 96)
    env.close()


# --------------------------------------------------------------------------- non-square frames downstream


def test_dmlab_conv_gives_the_reference_output_on_72x96():
    encoder = ConvEncoder("dmlab", (3, 72, 96))
    assert encoder.feature_shape == (64, 7, 10)
    assert encoder(torch.zeros(2, 3, 72, 96, dtype=torch.uint8)).shape == (2, 64, 7, 10)


def test_random_shift_on_non_square_frames_reads_clamped_rows_and_columns():
    x = torch.arange(2 * 1 * 6 * 10, dtype=torch.int64).view(2, 1, 6, 10)
    shifts = torch.tensor([[-4, 3], [4, -2]])  # (rows, cols) per sample: sample 0 (-4, 4), sample 1 (3, -2)
    out = _shift(x, shifts)
    for b, (dy, dx) in enumerate([(-4, 4), (3, -2)]):
        rows = np.clip(np.arange(6) + dy, 0, 5)
        cols = np.clip(np.arange(10) + dx, 0, 9)
        np.testing.assert_array_equal(out[b, 0].numpy(), x[b, 0].numpy()[np.ix_(rows, cols)])
    shifted = random_shift(torch.randint(0, 255, (4, 3, 72, 96), dtype=torch.uint8), pad=4)
    assert shifted.shape == (4, 3, 72, 96) and shifted.dtype == torch.uint8


@needs_miniworld
def test_ppo_with_atc_runs_on_the_72x96_stand_in():
    """The PPO loop passes image_size to make_vec_env unchanged; None is the family's own 72x96 frame."""
    from atcrl.rl.ppo import PPOConfig
    from atcrl.train.ppo_loop import PPOLoopConfig, build_run, train
    from atcrl.ul.atc import ATCConfig

    atc = ATCConfig(delta_t=3, batch_size=16, latent_size=16, predictor_hidden=16, shift_prob=1.0)
    cfg = PPOLoopConfig(env="miniworld:FourRooms", num_envs=2, horizon=16, steps=2 * 32, image_size=84,
                        encoder="dmlab", ul_start_steps=0, rl_start_steps=32, ul_replay_size=64, ul_updates=2,
                        device="cpu", atc=atc, ppo=PPOConfig(hidden=32, minibatches=2))
    run = build_run(replace(cfg, image_size=None))
    assert run.agent.net.encoder.in_shape == (3, 72, 96) and run.agent.net.encoder.feature_shape == (64, 7, 10)
    history = train(run)
    assert np.isfinite(history[-1][1]["ul/loss"]) and "rl/loss" in history[-1][1]
    assert run.ul.replays[0].frames.shape[1:] == (3, 72, 96)
    run.env.close()


# --------------------------------------------------------------------------- the commands


@needs_miniworld
def test_atcrl_envs_lists_the_stand_in_at_72x96_and_dmlab_with_its_install_line(capsys):
    from atcrl.envs.report import EnvsConfig, run_envs

    assert run_envs(EnvsConfig(steps=0, families=("miniworld", "dmlab"))) == 0
    table = capsys.readouterr().out
    assert "miniworld:FourRooms" in table and "yes (3, 72, 96) x4" in table
    assert "dmlab:explore_goal_locations_small" in table
    if not has_dmlab:
        assert "no: build DeepMind Lab" in table


@needs_miniworld
def test_atcrl_train_runs_ppo_iterations_on_the_stand_in(tmp_path):
    from atcrl.cli import main as atcrl
    from atcrl.metrics_log import read_jsonl

    out = tmp_path / "run"
    args = ["train", "--env", "miniworld:FourRooms", "--preset", "atari-ppo", "--steps", "128", "--ppo.num-envs", "2",
            "--ppo.horizon", "32", "--ppo.image-size", "32", "--ppo.encoder", "dmlab", "--ppo.agent.hidden", "32",
            "--eval-episodes", "0", "--no-tensorboard", "--device", "cpu", "--out", str(out)]
    assert atcrl(args) == 0
    rows = read_jsonl(out / "metrics.jsonl")
    assert rows and rows[-1]["step"] == 128 and "rl/loss" in rows[-1]
