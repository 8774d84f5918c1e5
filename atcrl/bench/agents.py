"""Agent steps/s including every update: SAC in each encoder mode, and PPO + ATC.

AGENT LOOPS' API: this section drives atcrl.train.sac_loop and atcrl.train.ppo_loop through their
public functions (build_run, train / iterate), with the fast path set through the loops' own
``fast`` field: ``build_run`` applies the process settings, prepares every conv of the agent and
the UL objective, and the losses run under its autocast. If a loop's API changes, this file is
the one place to follow it.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from typing import Any

import torch

from atcrl import fastpath
from atcrl.fastpath import FastPathConfig


def sac_steps_per_s(mode: str, fast: dict[str, Any], updates: int = 5, env: str = "dmc:cartpole-swingup",
                    fast_render: bool = False, device: str = "cpu", batch_size: int = 0,
                    overlap_env: bool = False) -> dict[str, Any]:
    """Agent steps/s of SAC once updates run (one SAC update, plus one UL update when decoupled, per step).

    The replay is first filled with ``batch_size`` warm-up steps; the figure covers the ``updates``
    steps after that (env step, acting and updates). batch_size: 0 = the paper's for ``env``.
    overlap_env: the loop's option of the same name (env step on a worker thread during the update).
    """
    from atcrl.checkpoint import export_encoder
    from atcrl.nets.encoders import ConvEncoder
    from atcrl.train.sac_loop import build_run, paper_config, train

    cfg_fast = FastPathConfig(**fast)
    paper = paper_config(env)
    batch = batch_size or paper.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        encoder_path = ""
        if mode == "frozen":  # any exported encoder will do for speed: a random one
            shape = _obs_shape(env, paper.image_size)
            encoder_path = str(export_encoder(ConvEncoder("dmc", shape), tmp, objective="random", data=[]))
        cfg = dataclasses.replace(
            paper, mode=mode, steps=batch + updates, warmup_steps=batch, batch_size=batch,
            replay_capacity=max(1000, 2 * (batch + updates)), eval_every=0, eval_episodes=0, log_every=batch,
            fast_render=fast_render, device=device, encoder_path=encoder_path, fast=cfg_fast,
            overlap_env=overlap_env)
        run = build_run(cfg)
        start = time.perf_counter()
        try:
            history = train(run)
        finally:
            run.close()
        total = time.perf_counter() - start
    update_rate = history[-1][1].get("perf/steps_per_s") if history else None
    return {"mode": mode, "batch_size": batch, "updates": updates, "overlap_env": overlap_env, "steps_per_s": update_rate,
            "warmup_and_updates_s": total, "process": run.process, "fastpath": fastpath.describe(cfg_fast, device)}


def _obs_shape(spec: str, image_size: int) -> tuple[int, ...]:
    from atcrl.envs import make_env

    env = make_env(spec, image_size=image_size)
    try:
        return tuple(env.observation_space.shape)
    finally:
        env.close()


def run_average_ul_updates(env: str = "atari:Pong") -> int:
    """UL updates per iteration averaged over a default (paper-length) PPO + ATC run, rounded: its schedule
    decays from ``ul_updates`` (6) towards 0, so the average iteration does ~2 of them."""
    from atcrl.train.ppo_loop import PPOLoopConfig

    cfg = PPOLoopConfig(env=env)
    return round(sum(cfg.ul_updates_at(i) for i in range(cfg.iterations)) / cfg.iterations)


def ppo_steps_per_s(fast: dict[str, Any], iterations: int = 2, env: str = "atari:Pong", num_envs: int = 16,
                    device: str = "cpu", overlap_ul: bool = False, ul_updates: int | None = None) -> dict[str, Any]:
    """Agent steps/s of PPO + ATC (decoupled, the paper's "ATC only") with RL and UL on from the start.

    ``ul_updates`` per iteration: None = the schedule's first (heaviest) iteration, the config's default 6.
    One untimed iteration first (it also fills the UL replay, so with ``overlap_ul`` every timed
    iteration overlaps); then the median of ``iterations`` iterations (collect + PPO + UL updates).
    """
    from atcrl.rl.rollout import Rollout
    from atcrl.train.ppo_loop import PPOLoopConfig, build_run, iterate

    cfg_fast = FastPathConfig(**fast)
    schedule = {} if ul_updates is None else {"ul_updates": ul_updates}
    cfg = PPOLoopConfig(env=env, num_envs=num_envs, ul_start_steps=0, rl_start_steps=0, device=device, fast=cfg_fast,
                        overlap_ul=overlap_ul, **schedule)
    run = build_run(cfg)
    shape, dtype = run.agent.policy_input_spec()
    rollout = Rollout.empty(cfg.horizon, cfg.num_envs, shape, dtype, torch.device(device))
    rates, parts = [], []
    for i in range(iterations + 1):
        metrics, _ = iterate(run, rollout)
        if i > 0:
            rates.append(metrics["perf/steps_per_s"])
            parts.append({k: metrics[k] for k in ("perf/collect_s", "perf/rl_s", "perf/ul_s", "perf/ul_wait_s")
                          if k in metrics})
    run.stop_ul_thread()
    run.env.close()
    rates.sort()
    return {"env": env, "num_envs": num_envs, "overlap_ul": overlap_ul, "steps_per_iteration": cfg.batch_steps,
            "ul_updates_per_iteration": cfg.ul_updates_at(0), "steps_per_s": rates[len(rates) // 2],
            "iteration_parts_s": parts, "process": run.process, "fastpath": fastpath.describe(cfg_fast, device)}
