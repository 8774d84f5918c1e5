"""ATC benchmarks: pretraining updates/s through the real ATC + ul_step path, and the fast path's accuracy check."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch

from atcrl import fastpath
from atcrl.bench.compute import training_flops
from atcrl.bench.timing import measure
from atcrl.data.batches import PairBatch
from atcrl.data.episode import Episode
from atcrl.data.replay import Replay
from atcrl.fastpath import FastPathConfig
from atcrl.nets.encoders import ConvEncoder
from atcrl.presets import pretrain_preset
from atcrl.process import configure_process
from atcrl.ul.atc import ATC, ATCConfig
from atcrl.ul.optim import ULOptimConfig, make_ul_optimizer, ul_step

PRESET_FRAMES: dict[str, tuple[tuple[int, int, int], int, int]] = {
    "dmc": ((3, 84, 84), 3, 125),
    "atari": ((1, 84, 84), 4, 500),
}
"""Per pretraining preset: single frame shape, frame stack, and episode length of the synthetic replay."""


def synthetic_replay(preset: str, transitions: int, seed: int = 0) -> Replay:
    """A replay of random frames laid out like the preset's data (speed does not depend on pixel content)."""
    frame, stack, steps = PRESET_FRAMES[preset]
    rng = np.random.default_rng(seed)
    episodes = max(1, math.ceil(transitions / steps))
    replay = Replay(episodes * (steps + 1), frame, frame_stack=stack)
    pool = rng.integers(0, 256, (64, *frame), dtype=np.uint8)
    for _ in range(episodes):
        replay.add_episode(Episode(frames=pool[rng.integers(0, len(pool), steps + 1)],
                                   actions=np.zeros(steps, np.float32), rewards=np.zeros(steps, np.float32),
                                   terminated=False, truncated=True))
    return replay


def atc_update_flops(objective: ATC, in_shape: tuple[int, ...], batch_size: int) -> float:
    """Conv + linear FLOPs of one ATC update (online encoder trained, momentum target forward only).

    Counted on two pairs and scaled: every counted layer is linear in the batch. The B x B logits are
    not counted (under 1% of an update at the paper batch sizes).
    """
    obs = torch.zeros(2, *in_shape, dtype=torch.uint8, device=next(objective.parameters()).device)
    pairs = PairBatch(obs, obs, torch.ones(2, dtype=torch.bool, device=obs.device), torch.zeros(2, 0),
                      torch.zeros(2, dtype=torch.long))
    return training_flops(objective, lambda: objective.loss(pairs)) * batch_size / 2


def atc_throughput(preset: str, fast: dict[str, Any], device: str = "cpu", transitions: int = 5000,
                   batch_size: int = 0, reps: int = 5, warmup: int = 2, min_seconds: float = 0.0) -> dict[str, Any]:
    """ATC pretraining updates/s on a synthetic replay, sampling included, with the preset's settings.

    batch_size: 0 = the preset's (256 DMC, 512 Atari). ``fast`` holds FastPathConfig fields.
    """
    cfg = FastPathConfig(**fast)
    process = configure_process(cfg)
    preset_cfg = pretrain_preset(preset)
    atc_cfg = preset_cfg.atc if not batch_size else dataclasses.replace(preset_cfg.atc, batch_size=batch_size)
    replay = synthetic_replay(preset, transitions)
    frame, stack, _ = PRESET_FRAMES[preset]
    in_shape = (stack * frame[0], *frame[1:])
    torch.manual_seed(0)
    objective = ATC(ConvEncoder(preset_cfg.encoder, in_shape), atc_cfg).to(device)
    fastpath.prepare_module(objective, cfg)
    optimizer, scheduler = make_ul_optimizer(objective, preset_cfg.optim, fast=cfg)
    rng = np.random.default_rng(0)
    B, dt = atc_cfg.batch_size, atc_cfg.delta_t

    def update() -> None:
        batch = replay.sample_pairs(B, rng, delta_t=dt).to(device, non_blocking=True)
        ul_step(objective, optimizer, scheduler, batch, preset_cfg.optim.grad_clip, fast=cfg)

    timing = measure(update, items=1, warmup=warmup, reps=reps, min_seconds=min_seconds)
    sampling = measure(lambda: replay.sample_pairs(B, rng, delta_t=dt), items=1, warmup=1, reps=reps)
    return {"batch_size": B, "delta_t": dt, "timing": timing, "sample_ms": 1e3 / sampling["per_s"],
            "flops_per_update": atc_update_flops(objective, in_shape, B), "process": process,
            "fastpath": fastpath.describe(cfg, device)}


# --------------------------------------------------------------------------- accuracy


def collect_random_episodes(spec: str, episodes: int, seed: int = 0) -> tuple[list[Episode], int]:
    """Episodes of a uniform random policy in ``spec`` (with physics state when the env has it); and the frame stack."""
    from atcrl.envs import env_meta, make_env
    from atcrl.train.collect import random_policy, record_episode

    env = make_env(spec, seed=seed)
    try:
        meta = env_meta(env)
        policy = random_policy(env.action_space)
        out = [record_episode(env, policy, reset_seed=seed + k, rng=np.random.default_rng([seed, k]),
                              frame_channels=meta.frame_channels, discrete=meta.discrete,
                              with_physics=meta.physics_dim is not None, task=spec) for k in range(episodes)]
    finally:
        env.close()
    return out, meta.frame_stack


def train_atc(episodes: list[Episode], frame_stack: int, atc_cfg: ATCConfig, fast: FastPathConfig, *,
              updates: int, seed: int, arch: str = "dmc", device: str = "cpu") -> ATC:
    """ATC on ``episodes`` for ``updates`` updates; batches and shifts depend on (seed, update) only,
    so two fast-path configs see exactly the same data and augmentations."""
    from atcrl.train.pretrain import update_rng

    replay = Replay.from_episodes(episodes, frame_stack=frame_stack)
    torch.manual_seed(seed)
    frame = episodes[0].frames.shape[1:]
    objective = ATC(ConvEncoder(arch, (frame_stack * frame[0], *frame[1:])), atc_cfg).to(device)  # type: ignore[arg-type]
    fastpath.prepare_module(objective, fast)
    optim = ULOptimConfig(warmup_updates=max(1, updates // 10), total_updates=updates + 1)
    optimizer, scheduler = make_ul_optimizer(objective, optim, fast=fast)
    for u in range(updates):
        batch = replay.sample_pairs(atc_cfg.batch_size, update_rng(seed, 0, u), delta_t=atc_cfg.delta_t,
                                    run=atc_cfg.run)
        ul_step(objective, optimizer, scheduler, batch.to(device), optim.grad_clip, fast=fast)
    return objective


@torch.no_grad()
def evaluate_atc(objective: ATC, episodes: list[Episode], frame_stack: int, fast: FastPathConfig, *,
                 batches: int, device: str = "cpu") -> float:
    """Mean contrastive accuracy on fixed held-out batches (same batches and shifts for every model)."""
    from atcrl.train.pretrain import update_rng

    replay = Replay.from_episodes(episodes, frame_stack=frame_stack)
    objective.eval()
    total = 0.0
    for i in range(batches):
        batch = replay.sample_pairs(objective.cfg.batch_size, update_rng(12345, 1, i), delta_t=objective.cfg.delta_t,
                                    run=objective.cfg.run)
        with fastpath.autocast(device, fast):
            total += objective.loss(batch.to(device))[1]["ul/accuracy"]
    objective.train()
    return total / batches


def probe_r2(encoder: ConvEncoder, train: list[Episode], test: list[Episode], frame_stack: int,
             device: str = "cpu") -> float | None:
    """Mean held-out R^2 of a ridge probe from features to the physics state, hinge angles as (sin, cos) as
    `atcrl probe` scores them (None without physics)."""
    from atcrl.train.probe import encode_episodes, linear_probe
    from atcrl.train.probe_targets import targets_of

    if any(ep.physics is None for ep in train + test):
        return None
    targets = targets_of(train[0].task, train[0].physics.shape[1])
    (x_fit, y_fit), (x_out, y_out) = (encode_episodes(encoder, eps, frame_stack, device=device) for eps in (train, test))
    return linear_probe((x_fit, targets.apply(y_fit)), (x_out, targets.apply(y_out))).mean_r2


def atc_accuracy(spec: str, variants: dict[str, FastPathConfig], *, episodes: int, val_episodes: int,
                 updates: int, batch_size: int, seeds: list[int], val_batches: int = 4,
                 device: str = "cpu") -> dict[str, Any]:
    """Contrastive accuracy and probe R^2 of ATC trained under each fast-path variant, same data and seeds.

    The first variant is the reference. Within noise means |mean - reference mean| <= 2 sigma sqrt(2/k)
    (a two-sided 2-sigma test on the means of k seeds), with sigma the reference's seed-to-seed std,
    floored by the binomial std of one accuracy estimate so that identical seeds do not give zero tolerance.
    """
    data, stack = collect_random_episodes(spec, episodes + val_episodes)
    train, held_out = data[:episodes], data[episodes:]
    atc_cfg = ATCConfig(batch_size=batch_size)
    raw: dict[str, dict[str, list[float]]] = {}
    for name, fast in variants.items():
        raw[name] = {"accuracy": [], "probe_r2": []}
        for seed in seeds:
            objective = train_atc(train, stack, atc_cfg, fast, updates=updates, seed=seed, device=device)
            raw[name]["accuracy"].append(evaluate_atc(objective, held_out, stack, fast, batches=val_batches,
                                                      device=device))
            r2 = probe_r2(objective.encoder, train, held_out, stack, device)
            if r2 is not None:
                raw[name]["probe_r2"].append(r2)
    reference = next(iter(variants))
    n_val = val_batches * batch_size
    out: dict[str, Any] = {"spec": spec, "updates": updates, "batch_size": batch_size, "seeds": seeds,
                           "train_episodes": episodes, "val_episodes": val_episodes, "reference": reference,
                           "variants": {}}
    for name, metrics in raw.items():
        row: dict[str, Any] = {"fastpath": fastpath.describe(variants[name], device)}
        for metric, values in metrics.items():
            if not values:
                continue
            ref = raw[reference][metric]
            p = float(np.mean(ref))
            floor = math.sqrt(max(p * (1 - p), 1e-4) / n_val) if metric == "accuracy" else 0.005
            sigma = max(float(np.std(ref, ddof=1)) if len(ref) > 1 else 0.0, floor)
            tolerance = 2 * sigma * math.sqrt(2 / len(seeds))
            diff = float(np.mean(values)) - p
            row[metric] = {"values": values, "mean": float(np.mean(values)), "diff": diff,
                           "tolerance": tolerance, "within_noise": abs(diff) <= tolerance}
        out["variants"][name] = row
    return out
