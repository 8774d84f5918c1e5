"""ATC: gradient flow, momentum targets, masking, ablations, the UL optimizer, and that it learns."""

from __future__ import annotations

import dataclasses
import math
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from atcrl.data.batches import PairBatch
from atcrl.data.dataset import open_dataset
from atcrl.data.episode import Episode
from atcrl.data.replay import Replay
from atcrl.envs import make_env
from atcrl.nets.encoders import ConvEncoder
from atcrl.train.collect import collect_episodes, random_policy
from atcrl.ul.atc import ATC, ATC_PRESETS, ATCConfig, ac_config, ats_config
from atcrl.ul.base import Objective
from atcrl.ul.contrastive import info_nce
from atcrl.ul.optim import ULOptimConfig, lr_factor, make_ul_optimizer, ul_step
from atcrl.ul.registry import OBJECTIVE_NAMES, default_config, make_objective


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny tensors gain nothing from intra-op threads, and on a busy 2-core machine (pytest -n 2)
    # spinning OpenMP workers multiply the CPU time several-fold.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SHAPE = (6, 32, 32)  # two stacked RGB frames: the smallest input the DMC conv stack accepts comfortably
SMALL = ATCConfig(batch_size=8, latent_size=16, predictor_hidden=32, target_tau=0.1)


def make_atc(cfg: ATCConfig = SMALL, seed: int = 0) -> ATC:
    torch.manual_seed(seed)
    return ATC(ConvEncoder("dmc", SHAPE), cfg)


def random_batch(batch_size: int = 8, seed: int = 0, valid: torch.Tensor | None = None) -> PairBatch:
    g = torch.Generator().manual_seed(seed)
    obs = lambda: torch.randint(0, 256, (batch_size, *SHAPE), dtype=torch.uint8, generator=g)
    return PairBatch(
        anchor=obs(),
        positive=obs(),
        valid=torch.ones(batch_size, dtype=torch.bool) if valid is None else valid,
        actions=torch.zeros(batch_size, 1, 2),
        task=torch.zeros(batch_size, dtype=torch.int64),
    )


def online_params(atc: ATC) -> list[nn.Parameter]:
    modules = [atc.encoder, atc.compressor] + ([atc.predictor] if atc.predictor is not None else [])
    params = [p for m in modules for p in m.parameters()]
    return params + ([atc.W] if atc.W is not None else [])


def target_params(atc: ATC) -> list[nn.Parameter]:
    return [*atc.target_encoder.parameters(), *atc.target_compressor.parameters()]


def snapshot(params) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


# --- gradients, targets, optimizer ----------------------------------------------------------------


def test_is_an_objective_with_pair_sampling():
    atc = make_atc()
    assert isinstance(atc, Objective)
    assert (atc.sampling.kind, atc.sampling.batch_size, atc.sampling.delta_t) == ("pairs", 8, 1)


def test_gradient_reaches_every_online_part_and_never_the_target():
    atc = make_atc()
    loss, metrics = atc.loss(random_batch())
    loss.backward()
    assert atc.predictor is not None and atc.W is not None
    for name, part in [("encoder", atc.encoder), ("compressor", atc.compressor), ("predictor", atc.predictor)]:
        for p in part.parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient in the {name}"
    assert atc.W.grad is not None and atc.W.grad.abs().sum() > 0
    for p in target_params(atc):
        assert not p.requires_grad and p.grad is None
    assert set(metrics) >= {"ul/loss", "ul/accuracy", "ul/valid_fraction"}
    assert metrics["ul/loss"] == pytest.approx(loss.item())


def test_optimizer_holds_exactly_the_online_params_even_beside_an_rl_head():
    atc = make_atc()
    rl_head = nn.Linear(atc.encoder.feature_dim, 4)  # an agent sharing the encoder: its head is not UL's
    opt, _ = make_ul_optimizer(atc, ULOptimConfig(warmup_updates=0, total_updates=10))
    held = [p for g in opt.param_groups for p in g["params"]]
    assert len(held) == len({id(p) for p in held})
    assert {id(p) for p in held} == {id(p) for p in online_params(atc)}
    assert not {id(p) for p in held} & {id(p) for p in [*target_params(atc), *rl_head.parameters()]}
    # Weight decay splits the same parameters into groups; still nothing else.
    opt_wd, _ = make_ul_optimizer(atc, ULOptimConfig(warmup_updates=0, total_updates=10, weight_decay=1e-4))
    decayed = {id(p) for g in opt_wd.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert {id(p) for g in opt_wd.param_groups for p in g["params"]} == {id(p) for p in online_params(atc)}
    assert decayed == {id(p) for p in online_params(atc) if p.ndim > 1}


def test_target_follows_exact_momentum_update():
    tau = SMALL.target_tau
    atc = make_atc()
    opt, sched = make_ul_optimizer(atc, ULOptimConfig(warmup_updates=0, total_updates=10))
    # The target starts as an exact copy of the online encoder and compressor.
    online = lambda: [*atc.encoder.parameters(), *atc.compressor.parameters()]
    for t, o in zip(target_params(atc), online()):
        assert torch.equal(t, o)
    for step in range(2):
        before = snapshot(target_params(atc))
        ul_step(atc, opt, sched, random_batch(seed=step), grad_clip=10.0)
        for t, t0, o in zip(target_params(atc), before, online()):
            assert not torch.equal(o.detach(), t0), "the online weights should have moved"
            torch.testing.assert_close(t, (1 - tau) * t0 + tau * o.detach(), rtol=1e-6, atol=1e-7)


def test_tau_one_makes_the_target_a_copy_of_the_online_weights():
    atc = make_atc(ATCConfig(batch_size=8, latent_size=16, predictor_hidden=32, target_tau=1.0))
    opt, sched = make_ul_optimizer(atc, ULOptimConfig(warmup_updates=0, total_updates=10))
    ul_step(atc, opt, sched, random_batch(), grad_clip=10.0)
    for t, o in zip(target_params(atc), [*atc.encoder.parameters(), *atc.compressor.parameters()]):
        assert torch.equal(t, o.detach())


# --- the loss -------------------------------------------------------------------------------------


def manual_logits(atc: ATC, batch: PairBatch) -> torch.Tensor:
    """p W c̄ᵀ (or p c̄ᵀ) computed from the parts, for un-augmented batches."""
    with torch.no_grad():
        c = atc.compressor(atc.encoder(batch.anchor).flatten(1))
        p = atc.predictor(c) if atc.predictor is not None else c
        c_bar = atc.target_compressor(atc.target_encoder(batch.positive).flatten(1))
    return (p @ atc.W if atc.W is not None else p) @ c_bar.T


@pytest.mark.parametrize("use_W", [True, False])
def test_loss_is_infonce_over_p_W_cbar(use_W):
    cfg = ATCConfig(batch_size=8, latent_size=16, predictor_hidden=32, augment=False, use_W=use_W)
    atc = make_atc(cfg)
    assert (atc.W is not None) == use_W
    with torch.no_grad():  # a target unlike the online weights: the positive must go through the target
        for t in target_params(atc):
            t.add_(0.05 * torch.randn_like(t))
    batch = random_batch()
    logits = manual_logits(atc, batch)
    loss, metrics = atc.loss(batch)
    expected = F.cross_entropy(logits, torch.arange(8))
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-5)
    expected_acc = (logits.argmax(1) == torch.arange(8)).float().mean().item()
    assert metrics["ul/accuracy"] == pytest.approx(expected_acc)


def test_masked_rows_add_nothing_to_loss_or_accuracy_but_remain_negatives():
    valid = torch.ones(8, dtype=torch.bool)
    valid[3] = False
    atc = make_atc()
    batch = random_batch(valid=valid)

    def run(b: PairBatch) -> tuple[float, dict[str, float]]:
        torch.manual_seed(7)  # identical shifts for each call
        loss, metrics = atc.loss(b)
        return loss.item(), metrics

    base_loss, base = run(batch)
    assert base["ul/valid_fraction"] == pytest.approx(7 / 8)
    assert round(base["ul/accuracy"] * 7, 5) == round(base["ul/accuracy"] * 7)  # a count over 7 rows
    other = torch.randint(0, 256, batch.anchor[3].shape, dtype=torch.uint8)
    new_anchor = batch.anchor.clone()
    new_anchor[3] = other
    loss2, m2 = run(PairBatch(new_anchor, batch.positive, valid, batch.actions, batch.task))
    assert loss2 == pytest.approx(base_loss, abs=1e-6) and m2["ul/accuracy"] == base["ul/accuracy"]
    # Its positive is still a negative for the other rows, so changing it does change the loss.
    new_positive = batch.positive.clone()
    new_positive[3] = other
    loss3, _ = run(PairBatch(batch.anchor, new_positive, valid, batch.actions, batch.task))
    assert abs(loss3 - base_loss) > 1e-4
    # Masking changes the loss relative to an all-valid batch (the row really is dropped from the mean).
    loss4, _ = run(PairBatch(batch.anchor, batch.positive, torch.ones(8, dtype=torch.bool), batch.actions,
                             batch.task))
    assert abs(loss4 - base_loss) > 1e-6


def test_masked_anchor_features_receive_exactly_zero_gradient():
    atc = make_atc(ATCConfig(batch_size=8, latent_size=16, predictor_hidden=32, augment=False))
    batch = random_batch()
    valid = torch.tensor([True, True, False, True, True, False, True, True])
    feats = atc.encoder(batch.anchor).detach().requires_grad_(True)
    loss, _ = atc.loss_from_features(feats, batch.positive, valid)
    loss.backward()
    grad_norms = feats.grad.flatten(1).norm(dim=1)
    assert (grad_norms[~valid] == 0).all() and (grad_norms[valid] > 0).all()
    # Without augmentation, loss_from_features on the encoder's own output equals loss(batch).
    full, _ = atc.loss(PairBatch(batch.anchor, batch.positive, valid, batch.actions, batch.task))
    torch.testing.assert_close(full.detach(), loss.detach())


def test_all_invalid_batch_gives_zero_loss_and_zero_gradient():
    atc = make_atc()
    loss, metrics = atc.loss(random_batch(valid=torch.zeros(8, dtype=torch.bool)))
    loss.backward()
    assert loss.item() == 0 and metrics["ul/accuracy"] == 0 and metrics["ul/valid_fraction"] == 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in online_params(atc))


def test_augmentation_switch():
    batch = random_batch()
    for augment, should_vary in [(True, True), (False, False)]:
        atc = make_atc(ATCConfig(batch_size=8, latent_size=16, predictor_hidden=32, augment=augment))
        losses = {round(atc.loss(batch)[0].item(), 6) for _ in range(3)}
        assert (len(losses) > 1) == should_vary


def test_anchor_and_positive_get_independent_shifts(monkeypatch):
    import atcrl.ul.atc as atc_module

    calls = []

    def spy(x, pad, prob, **kw):
        out = atc_module.random_shift.__wrapped__(x, pad=pad, prob=prob, **kw)
        calls.append((x, pad, prob, out))
        return out

    spy.__wrapped__ = atc_module.random_shift
    monkeypatch.setattr(atc_module, "random_shift", spy)
    atc = make_atc(ac_config(ATCConfig(batch_size=16, latent_size=16, predictor_hidden=32, shift_pad=3)))
    batch = random_batch(16)
    same = PairBatch(batch.anchor, batch.anchor.clone(), batch.valid, batch.actions, batch.task)
    atc.loss(same)
    assert len(calls) == 2
    (xa, pad_a, prob_a, out_a), (xp, pad_p, prob_p, out_p) = calls
    assert xa is same.anchor and xp is same.positive
    assert pad_a == pad_p == 3 and prob_a == prob_p == 1.0
    # The same frames, shifted twice: most samples must come out differently.
    differs = (out_a != out_p).flatten(1).any(dim=1)
    assert differs.float().mean() > 0.7


def test_variants_ac_ats_and_presets():
    ac = make_atc(ac_config(SMALL))
    assert ac.predictor is None and ac.sampling.delta_t == 0 and ac.W is not None
    assert not any(name.startswith("predictor") for name, _ in ac.named_parameters())
    ats = make_atc(ats_config(SMALL))
    assert ats.W is None and ats.predictor is not None
    loss, _ = ats.loss(random_batch())
    assert 0.0 <= loss.item() <= 4.0  # 2 - 2 cos
    loss.backward()
    assert all(p.grad is not None for p in ats.encoder.parameters())
    assert ATC_PRESETS["dmc"] == ATCConfig()
    assert (ATC_PRESETS["dmc"].delta_t, ATC_PRESETS["dmc"].batch_size, ATC_PRESETS["dmc"].latent_size) == (1, 256, 128)
    for name in ("atari", "dmlab"):
        p = ATC_PRESETS[name]
        assert (p.delta_t, p.batch_size, p.latent_size, p.shift_prob) == (3, 512, 256, 0.1)
    with pytest.raises(ValueError, match="target_tau"):
        ATCConfig(target_tau=0.0)


def test_registry_builds_atc_variants_and_rejects_unknown_names():
    assert {"atc", "ac", "cpc", "stdim", "vae", "pixel-control", "inverse", "random"} <= set(OBJECTIVE_NAMES)
    enc = ConvEncoder("dmc", SHAPE)
    atc = make_objective("atc", enc, SMALL)
    assert isinstance(atc, ATC) and atc.encoder is enc and atc.cfg == SMALL
    ac = make_objective("ac", ConvEncoder("dmc", SHAPE))
    assert ac.cfg == ac_config(ATCConfig()) == default_config("ac")
    with pytest.raises(ValueError, match="unknown UL objective 'byol'"):
        make_objective("byol", enc)


@pytest.mark.parametrize("name", OBJECTIVE_NAMES)
def test_registry_builds_every_objective_around_the_given_encoder(name):
    enc = ConvEncoder("dmc", (9, 84, 84))
    obj = make_objective(name, enc, action_dim=3, discrete_actions=True)
    assert isinstance(obj, Objective) and obj.encoder is enc
    cfg = default_config(name)
    assert getattr(obj, "cfg", cfg) == cfg


def test_input_shape_mismatch_is_reported():
    atc = make_atc()
    bad = random_batch()
    bad = PairBatch(bad.anchor[:, :3], bad.positive[:, :3], bad.valid, bad.actions, bad.task)
    with pytest.raises(ValueError, match="expects observations of shape"):
        atc.loss(bad)


# --- optimizer and schedule -----------------------------------------------------------------------


def test_schedule_warms_up_then_cosine_anneals_to_zero_through_ul_step():
    cfg = ULOptimConfig(lr=1e-3, warmup_updates=4, total_updates=12)
    atc = make_atc()
    opt, sched = make_ul_optimizer(atc, cfg)
    lrs = [ul_step(atc, opt, sched, random_batch(seed=i), cfg.grad_clip)["ul/lr"] for i in range(14)]
    assert lrs == pytest.approx([cfg.lr * lr_factor(u, cfg) for u in range(14)])
    assert lrs[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])  # linear warm-up to the peak
    assert lrs[4] == pytest.approx(1e-3) and lrs[8] == pytest.approx(5e-4)  # cosine: half-way is half
    assert all(a > b for a, b in pairwise(lrs[4:13]))
    assert lrs[12] == lrs[13] == 0.0  # reaches 0 and stays there
    constant = ULOptimConfig(warmup_updates=2, total_updates=5, schedule="constant")
    assert [lr_factor(u, constant) for u in range(6)] == [0.5, 1, 1, 1, 1, 1]
    with pytest.raises(ValueError, match="warmup_updates"):
        ULOptimConfig(warmup_updates=10, total_updates=10)


def test_grad_clip_bounds_the_applied_gradient_and_logs_the_raw_norm():
    atc = make_atc()
    opt, sched = make_ul_optimizer(atc, ULOptimConfig(warmup_updates=0, total_updates=10))
    metrics = ul_step(atc, opt, sched, random_batch(), grad_clip=1e-3)
    applied = math.sqrt(sum(p.grad.pow(2).sum().item() for p in online_params(atc)))
    assert metrics["ul/grad_norm"] > 1e-3
    assert applied == pytest.approx(1e-3, rel=1e-3)


def test_non_finite_loss_raises_before_touching_the_weights():
    atc = make_atc()
    opt, sched = make_ul_optimizer(atc, ULOptimConfig(warmup_updates=0, total_updates=10))
    batch = random_batch()
    nan_obs = batch.anchor.float() / 255
    nan_obs[0, 0, 0, 0] = float("nan")
    bad = PairBatch(nan_obs, batch.positive.float() / 255, batch.valid, batch.actions, batch.task)
    before = snapshot(atc.parameters())
    with pytest.raises(FloatingPointError, match="loss is nan"):
        ul_step(atc, opt, sched, bad, grad_clip=10.0)
    assert all(torch.equal(a, b) for a, b in zip(before, atc.parameters()))


# --- it learns ------------------------------------------------------------------------------------


def record_random_episodes(spec: str, n: int, image_size: int, seed: int, root: Path) -> list[Episode]:
    """Single-frame episodes of a uniformly random policy, recorded the way `atcrl collect` records them."""
    space = make_env(spec, image_size=image_size).action_space
    path = collect_episodes(spec, n, random_policy(space), out=root / "episodes", seed=seed,
                            image_size=image_size, progress=False)
    return open_dataset(path).load_all()


@torch.no_grad()
def held_out_accuracy(atc: ATC, replay: Replay, batches: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    need = atc.sampling
    return float(np.mean([atc.loss(replay.sample_pairs(need.batch_size, rng, delta_t=need.delta_t))[1]["ul/accuracy"]
                          for _ in range(batches)]))


def test_atc_learns_temporal_contrast_on_tiny_catch_far_above_chance(tmp_path):
    torch.manual_seed(0)
    # 100 episodes (~1000 frames) of a 10x10 falling-ball game drawn at 32x32, 2 stacked frames.
    episodes = record_random_episodes("tiny:catch", 100, image_size=32, seed=0, root=tmp_path)
    replay = Replay.from_episodes(episodes, frame_stack=2)
    cfg = ATCConfig(batch_size=64, latent_size=32, predictor_hidden=64, shift_pad=2)  # pad 4 at 84 px ~ 2 at 32 px
    atc = ATC(ConvEncoder("dmc", (2, 32, 32)), cfg)
    updates = 120
    opt, sched = make_ul_optimizer(atc, ULOptimConfig(lr=3e-3, warmup_updates=10, total_updates=updates))
    chance = 1 / cfg.batch_size
    before = held_out_accuracy(atc, replay, batches=5, seed=123)
    rng = np.random.default_rng(0)
    losses = [ul_step(atc, opt, sched, replay.sample_pairs(64, rng, delta_t=1), 10.0)["ul/loss"]
              for _ in range(updates)]
    after = held_out_accuracy(atc, replay, batches=5, seed=123)
    assert after > 10 * chance, (before, after)
    assert after > 2 * before, (before, after)
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.5


def test_atari_and_dmlab_presets_sample_sequences_and_dmc_pairs():
    for name in ("atari", "dmlab"):
        need = ATC(ConvEncoder("dmc", SHAPE), ATC_PRESETS[name]).sampling
        assert (need.kind, need.batch_size, need.run, need.delta_t) == ("pairs", 512, 16, 3)
    assert ATC(ConvEncoder("dmc", SHAPE), ATC_PRESETS["dmc"]).sampling.run == 1
    from atcrl.train.ppo_loop import PPOLoopConfig

    assert PPOLoopConfig().atc.run == 16  # online ATC in PPO samples sequences too
    assert dataclasses.replace(ATC_PRESETS["atari"], sampling="pairs").run == 1
    with pytest.raises(ValueError, match="multiple of sequence_length"):
        dataclasses.replace(ATC_PRESETS["atari"], batch_size=100)
    with pytest.raises(ValueError, match="sampling must be"):
        ATCConfig(sampling="windows")


def test_sequence_batch_contrasts_each_anchor_against_its_own_sequence(monkeypatch):
    """32 sequences x 16 steps: one 512 x 512 logits matrix, so every anchor's row scores the other 15 steps of
    its own sequence as negatives; the loss is InfoNCE over that whole row."""
    import atcrl.ul.atc as atc_module

    rng = np.random.default_rng(0)
    episodes = [Episode(frames=rng.integers(0, 256, (201, 3, 32, 32), dtype=np.uint8),
                        actions=np.zeros((200, 1), np.float32), rewards=np.zeros(200, np.float32),
                        terminated=False, truncated=True) for _ in range(4)]
    replay = Replay.from_episodes(episodes, frame_stack=2)
    cfg = dataclasses.replace(ATC_PRESETS["atari"], latent_size=16, predictor_hidden=32)
    torch.manual_seed(0)
    atc = ATC(ConvEncoder("dmc", SHAPE), cfg)
    need = atc.sampling
    replay.frames[:, 0, 0, 0] = replay._step  # each frame's step t (< 256 here) in its first pixel, to read rows back
    batch = replay.sample_pairs(need.batch_size, np.random.default_rng(1), delta_t=need.delta_t, run=need.run)
    t = batch.anchor[:, -3, 0, 0].long().view(32, 16)  # newest frame's first channel, per sequence
    # Each sequence is 16 consecutive stored steps (it may run on into the next episode, which starts at t = 0).
    assert ((t[:, 1:] - t[:, :-1] == 1) | (t[:, 1:] == 0)).all()
    seen = {}

    def spy(logits, labels):
        seen["logits"] = logits
        return info_nce(logits, labels)

    monkeypatch.setattr(atc_module, "info_nce", spy)
    loss, _ = atc.loss(batch)
    logits = seen["logits"]
    assert logits.shape == (512, 512)
    # Row 0's negatives include columns 1..15, its own sequence's other steps; the loss uses all 512 columns.
    assert torch.isfinite(logits[0, 1:16]).all()
    valid = batch.valid
    expected = F.cross_entropy(logits[valid], torch.arange(512)[valid])
    assert torch.allclose(loss, expected, atol=1e-5)
