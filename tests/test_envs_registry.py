"""Spec parsing, error messages, GL backend choice, resizing, and the `atcrl envs` report."""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np
import pytest

from atcrl.envs import env_meta, make_env, make_vec_env, parse_spec
from atcrl.envs.errors import require
from atcrl.envs.gl import configure_headless_gl, egl_available
from atcrl.envs.report import EnvsConfig, run_envs
from atcrl.envs.wrappers import resize_chw


def test_parse_spec_splits_family_and_name():
    assert parse_spec("dmc:ball_in_cup-catch") == ("dmc", "ball_in_cup-catch")
    assert parse_spec("gym:ALE/Pong-v5") == ("gym", "ALE/Pong-v5")


@pytest.mark.parametrize("spec,hint", [("dmcc:cartpole-swingup", "dmc"), ("tiney:point", "tiny"),
                                       ("cartpole-swingup", "family:name"), ("tiny:", "family:name"),
                                       ("tiny:pointt", "point"), ("tiny:cath", "catch")])
def test_bad_specs_name_close_matches(spec, hint):
    with pytest.raises(ValueError, match=hint):
        make_env(spec)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="image_size"):
        make_env("tiny:point", image_size=4)
    with pytest.raises(ValueError, match="frame_stack"):
        make_env("tiny:point", frame_stack=-1)
    with pytest.raises(ValueError, match="action_repeat"):
        make_env("tiny:point", action_repeat=0)
    with pytest.raises(ValueError, match="num_envs"):
        make_vec_env("tiny:point", 0)


def test_missing_optional_dependency_names_the_extra():
    with pytest.raises(ImportError, match=r"pip install 'atcrl\[dmc\]'"):
        require("atcrl_no_such_module_for_test", "dmc", "dmc")


def test_env_meta_rejects_foreign_envs():
    with pytest.raises(TypeError, match="not made by atcrl"):
        env_meta(gym.make("CartPole-v1"))


def test_gl_choice_respects_the_user(monkeypatch):
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    assert configure_headless_gl() == ("egl" if egl_available() else "osmesa")
    assert os.environ["PYOPENGL_PLATFORM"] == os.environ["MUJOCO_GL"]

    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    monkeypatch.delenv("PYOPENGL_PLATFORM")
    assert configure_headless_gl() == "osmesa"
    assert os.environ["PYOPENGL_PLATFORM"] == "osmesa"

    monkeypatch.delenv("MUJOCO_GL")
    monkeypatch.setenv("PYOPENGL_PLATFORM", "osmesa")  # a PyOpenGL choice decides MuJoCo's too
    assert configure_headless_gl() == "osmesa"

    monkeypatch.setenv("MUJOCO_GL", "glfw")
    monkeypatch.setenv("PYOPENGL_PLATFORM", "glx")
    assert configure_headless_gl() == "glfw"
    assert os.environ["PYOPENGL_PLATFORM"] == "glx"


def test_resize_area_averages_and_keeps_constants():
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, (2, 5, 4)).astype(np.uint8)
    image = blocks.repeat(3, axis=1).repeat(3, axis=2)  # 15 x 12, constant 3x3 blocks
    np.testing.assert_array_equal(resize_chw(image, 5, 4), blocks)
    flat = np.full((1, 210, 160), 77, np.uint8)
    assert (resize_chw(flat, 84, 84) == 77).all() and (resize_chw(flat, 300, 250) == 77).all()
    # Non-integer shrink keeps the mean brightness (area weights sum to one).
    noise = rng.integers(0, 256, (1, 210, 160)).astype(np.uint8)
    assert abs(resize_chw(noise, 84, 84).mean() - noise.mean()) < 0.5


def test_envs_report_lists_families_and_exit_codes(capsys):
    assert run_envs(EnvsConfig(steps=20, families=("tiny",))) == 0
    out = capsys.readouterr().out
    assert "tiny:point" in out and "(9, 84, 84)" in out
    assert out.splitlines()[0].split()[0] == "family"
    assert run_envs(EnvsConfig(steps=0, families=("nope",))) == 2
