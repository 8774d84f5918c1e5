"""The public API (atcrl.__all__): a light import, collect -> pretrain -> load_encoder, and errors raised, not exits."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import atcrl
from atcrl.checkpoint import CheckpointError
from atcrl.data.dataset import DatasetError, read_meta

SIZE = 40


def test_import_atcrl_loads_no_torch_and_the_api_on_first_use():
    code = ("import sys, atcrl; heavy = [m for m in ('torch', 'gymnasium', 'atcrl.api') if m in sys.modules]; "
            "assert not heavy, heavy; atcrl.make_env; assert 'atcrl.api' in sys.modules; "
            "assert 'torch' not in sys.modules, 'make_env pulled in torch'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_public_names_resolve_and_others_are_attribute_errors():
    for name in atcrl.__all__:
        assert getattr(atcrl, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        atcrl.nope  # noqa: B018
    from atcrl import envs  # submodules still import through the package

    assert envs.make_env is not None


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    seen = []

    def policy(obs, rng):
        seen.append(obs.shape)
        return int(rng.integers(3))

    data = atcrl.collect("tiny:catch", episodes=6, out=root / "catch", image_size=SIZE, policy=policy)
    assert seen and seen[0] == (4, SIZE, SIZE)
    assert read_meta(data).extra["collect"]["policy"] == "custom"
    result = atcrl.pretrain(data, out=str(root / "run"), updates=20, batch_size=16, val_fraction=0,
                            objective_args={"latent_size": 16}, tensorboard=False, device="cpu")
    return root, data, result


def test_pretrain_returns_the_run_and_its_exported_encoder(run):
    root, _, result = run
    assert result.run_dir == root / "run" and (result.run_dir / "config.json").is_file()
    assert result.encoder_path == root / "run" / "encoder.safetensors"
    encoder = atcrl.load_encoder(result.encoder_path)
    assert encoder.info["objective"] == "atc" and encoder.info["extra"]["updates"] == 20
    assert encoder.info["extra"]["objective_config"]["latent_size"] == 16


def test_load_encoder_maps_observations_to_features_frozen_or_trainable(run):
    _, _, result = run
    env = atcrl.make_env("tiny:catch", image_size=SIZE, seed=0)
    obs, _ = env.reset()
    frozen = atcrl.load_encoder(result.run_dir, device="cpu", expect_in_shape=env.observation_space.shape)
    assert frozen.in_shape == (4, SIZE, SIZE) and frozen.obs_dtype == np.uint8 and frozen.device.type == "cpu"
    assert frozen.frozen and not frozen.training and not any(p.requires_grad for p in frozen.parameters())
    one, batch = frozen(obs), frozen(np.stack([obs, obs]))
    assert one.shape == (frozen.feature_dim,) and batch.shape == (2, frozen.feature_dim)
    torch.testing.assert_close(batch[1], one)
    # uint8 pixels and the same pixels scaled to [0, 1] give the same features: the preprocessing is /255
    torch.testing.assert_close(frozen(torch.as_tensor(obs).float() / 255), one)
    torch.testing.assert_close(frozen(obs / 255.0), one)  # float64 numpy, as from an array division
    trainable = atcrl.load_encoder(result.encoder_path.with_suffix(".json"), freeze=False)
    trainable(obs).sum().backward()
    assert all(p.grad is not None for p in trainable.parameters())
    with pytest.raises(ValueError, match=r"reads observations of shape \(4, 40, 40\).*got \(3, 40, 40\)"):
        frozen(obs[:3])
    with pytest.raises(CheckpointError, match=r"trained on observations of shape \(4, 40, 40\)"):
        atcrl.load_encoder(result.encoder_path, expect_in_shape=(4, 84, 84))


def test_pretrain_raises_instead_of_exiting(run, tmp_path):
    _, data, _ = run
    with pytest.raises(TypeError, match="no setting updatez; its settings: .*updates"):
        atcrl.pretrain(data, updatez=3)
    with pytest.raises(DatasetError):
        atcrl.pretrain(tmp_path / "nothing-here", out=str(tmp_path / "r"), tensorboard=False)
    stopped = atcrl.pretrain([data], out=str(tmp_path / "s"), updates=20, stop_after=5, batch_size=16,
                             val_fraction=0, tensorboard=False, device="cpu")
    assert stopped.encoder_path is None and stopped.run_dir == tmp_path / "s"
