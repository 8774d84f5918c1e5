"""ATCExtractor: SB3 PPO learns tiny:catch on an encoder pretrained here with atcrl's API; frozen means bit-identical.

The encoder is pretrained in the test (atcrl.collect + atcrl.pretrain: 20 random episodes, 200 ATC updates,
about 4 s). PPO then trains 5000 steps (about 10 s on one core).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import atcrl
from atcrl.checkpoint import CheckpointError
from atcrl.pretrained import PretrainedEncoder

pytest.importorskip("stable_baselines3")
from stable_baselines3 import PPO
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

from atcrl.integrations.sb3 import ATCExtractor

SIZE = 40


@pytest.fixture(scope="module")
def encoder_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("sb3")
    data = atcrl.collect("tiny:catch", episodes=20, out=root / "catch", image_size=SIZE)
    run = atcrl.pretrain(data, out=str(root / "run"), updates=200, batch_size=32, val_fraction=0,
                         objective_args={"latent_size": 32}, tensorboard=False, device="cpu")
    assert run.encoder_path is not None
    return run.encoder_path


def _ppo(encoder_path, freeze: bool, seed: int = 0) -> PPO:
    policy_kwargs = {"features_extractor_class": ATCExtractor, "net_arch": [64],
                     "features_extractor_kwargs": {"encoder": str(encoder_path), "freeze": freeze}}
    return PPO("CnnPolicy", atcrl.make_env("tiny:catch", image_size=SIZE, seed=seed), policy_kwargs=policy_kwargs,
               n_steps=256, batch_size=64, n_epochs=10, learning_rate=1e-3, gamma=0.95, seed=seed, device="cpu")


def _mean_return(model: PPO) -> float:
    env = Monitor(atcrl.make_env("tiny:catch", image_size=SIZE, seed=1))
    return float(evaluate_policy(model, env, n_eval_episodes=100)[0])


def test_frozen_extractor_ppo_learns_catch_and_keeps_the_encoder_bit_identical(encoder_path):
    model = _ppo(encoder_path, freeze=True)
    extractor = model.policy.features_extractor
    assert isinstance(extractor, ATCExtractor) and extractor.features_dim == 32 * 2 * 2
    before = _mean_return(model)
    model.learn(5000)
    after = _mean_return(model)
    # A catch is +1 and a miss -1: 0.5 is a 75% catch rate; the untrained policy scores -0.7 here
    # (seeds 0-3 reached 1.0, 0.74, 0.78, 1.0).
    assert after >= 0.5 and after - before >= 0.8, (before, after)
    exported = PretrainedEncoder.load(encoder_path).conv.state_dict()
    trained = extractor.encoder.state_dict()
    assert exported.keys() == trained.keys()
    assert all(torch.equal(trained[k], v) for k, v in exported.items())
    assert not any(p.requires_grad for p in extractor.encoder.parameters())
    # SB3 re-initialises its features extractor (ortho_init); the pretrained weights must have survived that.
    assert model.policy.ortho_init


def test_fine_tuned_extractor_trains_the_encoder(encoder_path):
    model = _ppo(encoder_path, freeze=False)
    encoder = model.policy.features_extractor.encoder
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    model.learn(256)
    assert all(p.requires_grad for p in encoder.parameters())
    assert any(not torch.equal(v, before[k]) for k, v in encoder.state_dict().items())


def test_mismatched_observations_and_unscaled_pixels_are_refused(encoder_path):
    wrong = gym.spaces.Box(0, 255, (4, 48, 48), np.uint8)
    with pytest.raises(CheckpointError, match=r"trained on observations of shape \(4, 40, 40\)"):
        ATCExtractor(wrong, encoder_path)
    space = gym.spaces.Box(0, 255, (4, SIZE, SIZE), np.uint8)
    extractor = ATCExtractor(space, encoder_path)
    with pytest.raises(ValueError, match="normalize_images=True"):
        extractor(torch.full((2, 4, SIZE, SIZE), 200.0))
    assert extractor(torch.rand(2, 4, SIZE, SIZE)).shape == (2, extractor.features_dim)
