"""ATCLoss computes what `atcrl pretrain` computes on the same batch and weights, and owns its momentum target."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from atcrl.envs import make_env
from atcrl.losses import ATCLoss
from atcrl.nets.encoders import ConvEncoder
from atcrl.pretrained import PretrainedEncoder
from atcrl.train.collect import collect_episodes, random_policy
from atcrl.train.pretrain import PretrainConfig, load_data, resolve_settings, sample, update_rng
from atcrl.ul.atc import ATCConfig
from atcrl.ul.registry import make_objective

SIZE = 40


@pytest.fixture(scope="module")
def catch_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("catch")
    space = make_env("tiny:catch", image_size=SIZE).action_space
    return collect_episodes("tiny:catch", 6, random_policy(space), out=out / "ds", image_size=SIZE, progress=False)


def _pipeline(catch_data, *objective_args: str):
    cfg = PretrainConfig(data=(str(catch_data),), batch_size=16, objective_args=("latent_size=32", *objective_args))
    return cfg, resolve_settings(cfg), load_data(cfg)


@pytest.mark.parametrize("augment", [True, False])
def test_loss_equals_the_pretraining_pipelines_on_the_same_batch_and_weights(catch_data, augment):
    cfg, settings, data = _pipeline(catch_data, f"augment={augment}")
    # Built as run_pretrain builds it: seed, encoder, objective.
    torch.manual_seed(cfg.seed)
    objective = make_objective("atc", ConvEncoder(settings.encoder, data.in_shape), settings.objective)
    torch.manual_seed(cfg.seed)
    atc = ATCLoss(ConvEncoder(settings.encoder, data.in_shape), settings.objective)
    same = objective.state_dict()
    assert all(torch.equal(v, same[k]) for k, v in atc.objective.state_dict().items())

    for update in (0, 1):
        batch = sample(data.train, objective.sampling, 16, update_rng(cfg.seed, 0, update))
        want, want_metrics = objective.loss(batch)
        update_rng(cfg.seed, 0, update)  # the same torch seed again: the same random shifts
        got, metrics = atc(batch.anchor, batch.positive, batch.valid)
        assert torch.equal(got, want) and metrics == want_metrics
        assert metrics["ul/loss"] > 0
        want.backward()
        got.backward()
        for (name, p), q in zip(objective.named_parameters(), atc.objective.parameters()):
            if p.requires_grad:
                assert torch.equal(p.grad, q.grad), name


def test_augmentation_changes_the_loss_and_valid_masks_rows(catch_data):
    _, settings, data = _pipeline(catch_data)
    batch = sample(data.train, make_objective("atc", ConvEncoder("dmc", data.in_shape), settings.objective).sampling,
                   16, np.random.default_rng(0))
    atc = ATCLoss(ConvEncoder("dmc", data.in_shape), settings.objective)
    torch.manual_seed(1)
    a, _ = atc(batch.anchor, batch.positive)
    torch.manual_seed(2)
    b, _ = atc(batch.anchor, batch.positive)
    assert not torch.equal(a, b), "different augmentation seeds gave the same loss"
    valid = torch.ones(16, dtype=torch.bool)
    valid[:4] = False
    _, metrics = atc(batch.anchor.numpy(), batch.positive.numpy(), valid.numpy())
    assert metrics["ul/valid_fraction"] == pytest.approx(0.75)


def test_update_target_moves_the_momentum_encoder_by_tau():
    torch.manual_seed(0)
    atc = ATCLoss(ConvEncoder("dmc", (4, SIZE, SIZE)), ATCConfig(latent_size=16, target_tau=0.25))
    online, target = atc.encoder.convs[0].weight, atc.objective.target_encoder.convs[0].weight
    before = target.clone()
    with torch.no_grad():
        online.add_(1.0)
    atc.update_target()
    torch.testing.assert_close(target, before + 0.25 * (online - before), rtol=0, atol=1e-6)
    assert not target.requires_grad and online.requires_grad


def test_trains_a_loaded_encoder_in_place_and_refuses_a_frozen_one():
    with pytest.raises(ValueError, match="frozen: load it with freeze=False"):
        ATCLoss(PretrainedEncoder(ConvEncoder("dmc", (4, SIZE, SIZE)), freeze=True))
    conv = ConvEncoder("dmc", (4, SIZE, SIZE))
    atc = ATCLoss(PretrainedEncoder(conv, freeze=False), ATCConfig(latent_size=16))
    assert atc.encoder is conv
    obs = torch.randint(0, 256, (8, 4, SIZE, SIZE), dtype=torch.uint8)
    with pytest.raises(ValueError, match="at least 2 rows"):
        atc(obs[:1], obs[:1])
    with pytest.raises(ValueError, match=r"valid must have shape \[8\]"):
        atc(obs, obs, torch.ones(3, dtype=torch.bool))
    optimizer = torch.optim.Adam(atc.parameters(), lr=1e-3)
    before = conv.convs[0].weight.detach().clone()
    loss, _ = atc(obs, obs.roll(1, dims=0))
    loss.backward()
    optimizer.step()
    assert not torch.equal(conv.convs[0].weight, before)


def test_config_fields_change_the_heads():
    conv = ConvEncoder("dmc", (4, SIZE, SIZE))
    atc = ATCLoss(conv, dataclasses.replace(ATCConfig(), latent_size=8, use_predictor=False, use_W=False))
    assert atc.objective.compressor.out_features == 8
    assert atc.objective.predictor is None and atc.objective.W is None
