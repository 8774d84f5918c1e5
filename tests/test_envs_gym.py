"""gym:<id> envs: image observations of any layout become stacked square frames; others are refused."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from atcrl.envs import env_meta, make_env

needs_miniworld = pytest.mark.skipif(importlib.util.find_spec("miniworld") is None, reason="miniworld missing")
needs_ale = pytest.mark.skipif(importlib.util.find_spec("ale_py") is None, reason="ale-py missing")


@needs_miniworld
def test_miniworld_renders_headless_at_the_requested_size():
    env = make_env("gym:MiniWorld-OneRoom-v0", seed=0, image_size=32)
    meta = env_meta(env)
    assert meta.family == "gym" and meta.discrete and meta.frame_stack == 3 and meta.frame_channels == 3
    assert meta.max_episode_steps == 180  # MiniWorld's own step limit
    obs, _ = env.reset()
    assert obs.shape == (9, 32, 32)
    # Rendered directly at 32 x 32 rather than rendered at 60 x 80 and resized.
    assert env.unwrapped.observation_space.shape == (32, 32, 3)
    # Turning changes the view.
    new, *_ = env.step(0)
    assert not np.array_equal(new[6:], obs[6:])


@needs_miniworld
def test_miniworld_action_repeat_shortens_the_episode_bound():
    env = make_env("gym:MiniWorld-OneRoom-v0", seed=0, image_size=16, action_repeat=4)
    assert env_meta(env).max_episode_steps == 45


@needs_ale
def test_hwc_rgb_observations_are_resized_to_chw():
    """ALE v5's 210x160x3 RGB frames go through the generic path: area-resized, channels first."""
    env = make_env("gym:ALE/Pong-v5", seed=0, image_size=42, frame_stack=1)
    obs, _ = env.reset()
    assert obs.shape == (3, 42, 42) and obs.dtype == np.uint8
    raw = env.unwrapped.ale.getScreenRGB()
    # Pong's 210 x 160 screen: the top rows are the score band; compare mean colours of the whole frame.
    np.testing.assert_allclose(obs.reshape(3, -1).mean(1), raw.reshape(-1, 3).mean(0), atol=1.0)


def test_non_image_observations_are_refused_clearly():
    with pytest.raises(ValueError, match="not an image"):
        make_env("gym:CartPole-v1")


def test_unknown_gym_id_suggests_close_ids():
    with pytest.raises(ValueError, match="CartPole-v1"):
        make_env("gym:CartPol-v1")


@needs_miniworld
def test_unknown_miniworld_id_suggests_close_ids():
    with pytest.raises(ValueError, match="MiniWorld-OneRoom-v0"):
        make_env("gym:MiniWorld-OneRom-v0")
