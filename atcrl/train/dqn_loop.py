"""Online double DQN from pixels on vector envs with discrete actions: the Atari DQN expert whose replay
becomes the UL benchmark's demonstrations (``atcrl collect --whole-replay``).

Each vector step: every env acts ε-greedily with its own ε (see ``epsilons``), the transitions go to that
env's replay, and once ``warmup_steps`` agent steps are in, one gradient update follows every
``train_every`` agent steps (summed over the envs). Before that the envs act uniformly at random.

Exploration: env i of N ends at ε_i = eps_max · (eps_min / eps_max)^(i / (N - 1)), log-spaced from
eps_max (env 0) down to eps_min (env N - 1; a single env gets eps_max). Each env's ε falls linearly
from eps_start to its ε_i over the ``eps_decay_steps`` agent steps after the warm-up, then stays.

Replay layout: one FIFO ``Replay`` per env holding ``replay_size / num_envs`` single frames (raw rewards;
the update sums sign(r) with ``clip_rewards``); a batch takes an equal share from every env's replay
(atcrl.data.multitask.MultiTaskReplay) of n-step transitions that never cross a write cursor.

Online UL (``ul``, optional): one UL update on the agent's conv per DQN update, sampling the same replays;
required in decoupled mode, refused in frozen mode.

Resuming restores the agent, its optimizer, the counters, the sampling and acting RNGs and, with
``atcrl train --checkpoint-replay``, the replays. The envs start fresh episodes (seeded by the step),
so a resumed run continues at the same step but is not bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from atcrl.data.multitask import MultiTaskReplay
from atcrl.data.replay import Replay
from atcrl.device import resolve_device
from atcrl.encoder_io import load_or_make_encoder
from atcrl.fastpath import FastPathConfig, prepare_module
from atcrl.process import configure_process
from atcrl.resumable import RESUMABLE
from atcrl.rl.dqn import DQNAgent, DQNConfig, QNetwork
from atcrl.rl.modes import EncoderMode
from atcrl.train.online_ul import OnlineUL, build_objective
from atcrl.train.ppo_loop import store_first, store_step
from atcrl.ul.atc import ATC_PRESETS, ATCConfig
from atcrl.ul.optim import ULOptimConfig
from atcrl.ul.registry import atc_family

MetricsHook = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class DQNLoopConfig:
    """One online DQN run; defaults are the Atari DQN expert's settings (docs/reference-settings.md,
    "DQN expert for Atari"): end-to-end double DQN, no UL."""

    env: str = "atari:Pong"
    """Environment spec for make_vec_env (discrete actions)."""
    mode: EncoderMode = EncoderMode.end_to_end
    """Who trains the conv: end_to_end (TD loss), decoupled (UL only: set ul), frozen (nobody)."""
    steps: int = 15_000_000
    """Total agent steps over all envs (env steps = agent steps x action repeat); rounded up to whole vector steps."""
    num_envs: int = 8
    """Parallel envs, each with its own final ε (eps_min .. eps_max)."""
    replay_size: int = 1_000_000
    """Most recent agent steps kept (split evenly into one FIFO per env). Whole-replay datasets hold what is left
    in it at the end: set it to >= steps to keep every transition."""
    batch_size: int = 32
    """Transitions per gradient update (an equal share from every env's replay)."""
    n_step: int = 1
    """n-step return for the TD target (stops at episode ends and at the newest stored step)."""
    discount: float = 0.99
    """Discount gamma."""
    warmup_steps: int = 20_000
    """Agent steps acting uniformly at random before the first update."""
    train_every: int = 4
    """Agent steps (summed over the envs) per gradient update after the warm-up."""
    eps_start: float = 1.0
    """ε of every env when the decay starts (right after the warm-up)."""
    eps_decay_steps: int = 250_000
    """Agent steps after the warm-up over which each env's ε falls linearly to its final value (0 = at once)."""
    eps_min: float = 0.001
    """Final ε of the least exploring env (env N - 1)."""
    eps_max: float = 0.2
    """Final ε of the most exploring env (env 0); the others are log-spaced in between."""
    clip_rewards: bool = True
    """Learn from sign(reward) (Atari); the replay and the logged episode return keep the raw score."""
    image_size: int = 84
    """Square observation side in pixels."""
    action_repeat: int = 0
    """Env steps per agent step; 0 = the family's default (Atari: frame skip 4)."""
    frame_stack: int = 0
    """Stacked frames per observation; 0 = the family's default (Atari: 4)."""
    encoder: str = "atari"
    """Conv architecture for a fresh encoder ("atari", "dmc", "dmlab")."""
    encoder_path: str = ""
    """Exported encoder to start from (.safetensors/.json or directory); required in frozen mode."""
    ul: str = "none"
    """Online UL objective training the conv, one update per DQN update ("none" = no UL; see atcrl.ul.registry).
    Required when decoupled."""
    atc: ATCConfig = ATC_PRESETS["atari"]
    """Config of the ATC family (atc, ac, ats) when ul is one of them; other objectives use their defaults."""
    ul_lr: float = 1e-3
    """Peak UL learning rate (Adam)."""
    ul_lr_schedule: Literal["cosine", "constant"] = "cosine"
    """UL learning-rate schedule over the run's updates."""
    ul_grad_clip: float = 10.0
    """Max UL gradient norm (0 = no clipping)."""
    log_every: int = field(default=10_000, metadata=RESUMABLE)
    """Agent steps between metric reports (averages over the interval)."""
    seed: int = 0
    """Seeds torch, the envs, ε-greedy acting and replay sampling."""
    device: str = field(default="auto", metadata=RESUMABLE)
    """"auto" (CUDA when available), "cpu", "cuda", "cuda:1", ..."""
    fast: FastPathConfig = field(default_factory=FastPathConfig, metadata=RESUMABLE)
    """How the networks run (precision, activation layout, compilation, CPU threads, allocator); it changes
    speed, not what is trained, so it may differ on --resume. FastPathConfig.fp32_eager() is the plain path."""
    dqn: DQNConfig = field(default_factory=DQNConfig)
    """Agent hyperparameters."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", EncoderMode(self.mode))
        if self.steps < 0 or self.warmup_steps < 0 or self.eps_decay_steps < 0:
            raise ValueError("steps, warmup_steps and eps_decay_steps must be >= 0")
        if min(self.num_envs, self.batch_size, self.n_step, self.train_every, self.log_every) < 1:
            raise ValueError("num_envs, batch_size, n_step, train_every and log_every must be >= 1")
        if not 0 < self.eps_min <= self.eps_max <= 1 or not 0 <= self.eps_start <= 1:
            raise ValueError(f"need 0 < eps_min <= eps_max <= 1 and eps_start in [0, 1], got eps_min {self.eps_min}, "
                             f"eps_max {self.eps_max}, eps_start {self.eps_start}")
        if not 0 <= self.discount <= 1:
            raise ValueError(f"discount must be in [0, 1], got {self.discount}")
        if self.replay_size < 2 * self.num_envs * (self.batch_size // self.num_envs + 2):
            raise ValueError(f"replay_size {self.replay_size} is too small for batches of {self.batch_size} "
                             f"from {self.num_envs} envs")
        has_ul = self.ul != "none"
        if self.mode is EncoderMode.decoupled and not has_ul:
            raise ValueError("decoupled mode trains the conv only with UL: set ul (e.g. atc), or use "
                             "mode=frozen for a fixed encoder")
        if self.mode is EncoderMode.frozen and has_ul:
            raise ValueError("a frozen encoder is never updated: set ul=none (or mode=decoupled to train it by UL)")

    @property
    def vector_steps(self) -> int:
        """Vector-env steps of the run."""
        return math.ceil(self.steps / self.num_envs)

    @property
    def total_steps(self) -> int:
        """Agent steps of the run (``steps`` rounded up to whole vector steps)."""
        return self.vector_steps * self.num_envs

    def final_epsilons(self) -> np.ndarray:
        """[num_envs] ε each env ends at: log-spaced from eps_max (env 0) to eps_min (env N - 1)."""
        if self.num_envs == 1:
            return np.array([self.eps_max])
        return self.eps_max * (self.eps_min / self.eps_max) ** (np.arange(self.num_envs) / (self.num_envs - 1))

    def epsilons(self, step: int) -> np.ndarray:
        """[num_envs] ε at agent step ``step``: 1 in the warm-up, then linear from eps_start to each final ε."""
        if step < self.warmup_steps:
            return np.ones(self.num_envs)
        frac = 1.0 if self.eps_decay_steps == 0 else min(1.0, (step - self.warmup_steps) / self.eps_decay_steps)
        final = self.final_epsilons()
        return self.eps_start + frac * (final - self.eps_start)

    def updates_due(self, step: int) -> int:
        """Gradient updates the schedule has made by agent step ``step``."""
        return max(0, step - self.warmup_steps) // self.train_every


@dataclass
class DQNRun:
    """Everything one run holds; ``train`` advances it, ``state_dict`` captures it (without envs and replays)."""

    cfg: DQNLoopConfig
    env: Any
    agent: DQNAgent
    replays: list[Replay]
    """One FIFO per env."""
    ul: OnlineUL | None
    device: torch.device
    frame_channels: int
    action_repeat: int
    rng: np.random.Generator
    """Replay sampling."""
    act_generator: torch.Generator
    """ε-greedy acting."""
    vector_step: int = 0
    """Vector steps taken (agent steps = vector_step x num_envs)."""
    episodes: int = 0
    """Training episodes finished."""
    obs: np.ndarray | None = None
    """Current observations of the vector env; None = reset before acting."""
    episode_return: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """[num_envs] raw score so far of each env's current episode."""
    process: dict[str, Any] = field(default_factory=dict)
    """What ``process.configure_process`` applied (threads, allocator)."""

    @property
    def step(self) -> int:
        """Agent steps taken."""
        return self.vector_step * self.cfg.num_envs

    @property
    def sampler(self) -> MultiTaskReplay:
        """The env replays sampled as one: an equal share of each batch from every env."""
        return MultiTaskReplay(self.replays)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"agent": self.agent.state_dict(), "vector_step": self.vector_step,
                                 "episodes": self.episodes, "rng": self.rng.bit_generator.state,
                                 "act_generator": self.act_generator.get_state()}
        if self.ul is not None:
            state.update(self.ul.state_dict())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a run; the envs restart their episodes (the replays are restored by the session, if saved)."""
        self.agent.load_state_dict(state["agent"])
        self.vector_step, self.episodes = int(state["vector_step"]), int(state["episodes"])
        self.rng.bit_generator.state = state["rng"]
        self.act_generator.set_state(state["act_generator"])
        if self.ul is not None:
            self.ul.load_state_dict(state)
        self.obs = None

    def close(self) -> None:
        self.env.close()


def build_run(cfg: DQNLoopConfig, *, encoder: Any = None) -> DQNRun:
    """Vector env, encoder (given, loaded from cfg.encoder_path, or fresh), agent, replays and online UL."""
    from atcrl.envs import env_meta, make_vec_env

    process = configure_process(cfg.fast)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    env = make_vec_env(cfg.env, cfg.num_envs, seed=cfg.seed, image_size=cfg.image_size,
                       frame_stack=cfg.frame_stack or None, action_repeat=cfg.action_repeat or None)
    try:
        meta = env_meta(env)
        if not meta.discrete:
            raise ValueError(f"DQN needs discrete actions, but {cfg.env} has continuous ones; train it with SAC")
        obs_shape = tuple(env.single_observation_space.shape)
        encoder = load_or_make_encoder(encoder, cfg.encoder_path, cfg.encoder, obs_shape,
                                       frozen=cfg.mode is EncoderMode.frozen)
        agent = build_agent(cfg, encoder, int(env.single_action_space.n), device)
        frame_shape = (meta.frame_channels, *obs_shape[1:])
        capacity = math.ceil(cfg.replay_size / cfg.num_envs)
        replays = [Replay(capacity, frame_shape, frame_stack=meta.frame_stack, action_dtype=np.int64)
                   for _ in range(cfg.num_envs)]
        ul = None
        if cfg.ul != "none":
            objective = build_objective(cfg.ul, agent.net.encoder, cfg.atc if atc_family(cfg.ul) else None,
                                        device=device, action_dim=agent.net.n_actions, discrete_actions=True)
            optim = ULOptimConfig(lr=cfg.ul_lr, warmup_updates=0, total_updates=max(1, cfg.updates_due(cfg.total_steps)),
                                  schedule=cfg.ul_lr_schedule, grad_clip=cfg.ul_grad_clip)
            ul = OnlineUL(prepare_module(objective, cfg.fast), replays, optim, cfg.fast, device)
    except BaseException:
        env.close()
        raise
    return DQNRun(cfg, env, agent, replays, ul, device, meta.frame_channels, meta.action_repeat,
                  np.random.default_rng(cfg.seed), torch.Generator(device).manual_seed(cfg.seed), process=process)


def build_agent(cfg: DQNLoopConfig, encoder: Any, n_actions: int, device: torch.device | str) -> DQNAgent:
    """A fresh agent of the run's architecture on the run's fast path (its conv, target included)."""
    net = QNetwork(encoder, n_actions, cfg.dqn.hidden, cfg.dqn.dueling)
    return prepare_module(DQNAgent(net, cfg.mode, cfg.dqn, device, fast=cfg.fast), cfg.fast)


def vector_step(run: DQNRun) -> list[float]:
    """One ε-greedy step of every env, stored in the env replays; returns the raw scores of episodes that ended."""
    cfg, env = run.cfg, run.env
    if run.obs is None:
        run.obs, _ = env.reset(seed=cfg.seed + 7919 * run.vector_step)
        run.episode_return = np.zeros(cfg.num_envs)
        store_first(run.replays, run.obs, run.frame_channels)
    eps = cfg.epsilons(run.step)
    actions = run.agent.act(torch.from_numpy(run.obs), eps, run.act_generator).cpu().numpy()
    next_obs, reward, terminated, truncated, info = env.step(actions)
    done = terminated | truncated
    final_obs = info.get("final_obs") if done.any() else None
    store_step(run.replays, run.frame_channels, actions, reward, next_obs, terminated, truncated, final_obs)
    run.episode_return += reward
    finished = [float(run.episode_return[i]) for i in np.flatnonzero(done)]
    run.episode_return[done] = 0.0
    run.episodes += len(finished)
    run.obs = next_obs
    run.vector_step += 1
    return finished


def update(run: DQNRun) -> dict[str, float]:
    """One DQN update on a batch from the env replays, then (with ul) one UL update; their metrics."""
    cfg = run.cfg
    batch = run.sampler.sample_transitions(cfg.batch_size, run.rng, n_step=cfg.n_step, gamma=cfg.discount,
                                           sign_rewards=cfg.clip_rewards)
    metrics = run.agent.update(run.agent.prepare(batch))
    if run.ul is not None:
        metrics.update(run.ul.update(run.rng, 1))
    return metrics


def _can_sample(run: DQNRun) -> bool:
    share = -(-run.cfg.batch_size // run.cfg.num_envs)
    return all(r.num_transitions >= share for r in run.replays)


def train(run: DQNRun, *, on_metrics: MetricsHook | None = None,
          on_step: Callable[[DQNRun], None] | None = None) -> list[tuple[int, dict[str, float]]]:
    """Run from ``run.step`` to the end; returns every (agent step, metrics) report.

    After each vector step the updates the schedule owes for its agent steps run (none while a replay lacks
    its share of a batch, e.g. right after resuming without the saved replays). on_metrics(step, metrics)
    gets interval means every ``log_every`` agent steps (rl/episode_return: the mean raw score of the
    episodes that ended in them; counters as current values). on_step(run) follows every vector step.
    """
    cfg = run.cfg
    history: list[tuple[int, dict[str, float]]] = []
    sums: dict[str, float] = {}
    count, returns, tick, tick_step = 0, [], time.perf_counter(), run.step
    while run.vector_step < cfg.vector_steps:
        before = run.step
        returns += vector_step(run)
        owed = cfg.updates_due(run.step) - cfg.updates_due(before)
        if owed and _can_sample(run):
            for _ in range(owed):
                for k, v in update(run).items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
        if run.step // cfg.log_every > before // cfg.log_every or run.vector_step == cfg.vector_steps:
            now = time.perf_counter()
            report = {k: v / count for k, v in sums.items()}
            if returns:
                report["rl/episode_return"] = float(np.mean(returns))
            report.update({"rl/episodes": float(run.episodes), "rl/updates": float(run.agent.updates),
                           "rl/epsilon_mean": float(cfg.epsilons(run.step).mean()),
                           "perf/env_steps": float(run.step * run.action_repeat),
                           "perf/steps_per_s": (run.step - tick_step) / max(now - tick, 1e-9)})
            if run.ul is not None:
                report["ul/updates"] = float(run.ul.updates)
            history.append((run.step, report))
            if on_metrics is not None:
                on_metrics(run.step, report)
            sums.clear()
            count, returns, tick, tick_step = 0, [], now, run.step
        if on_step is not None:
            on_step(run)
    return history


def train_dqn(cfg: DQNLoopConfig, *, on_metrics: MetricsHook | None = None, **build_kwargs: Any
              ) -> tuple[DQNRun, list[tuple[int, dict[str, float]]]]:
    """Build a run and train it to the end; returns the run and its metric history."""
    run = build_run(cfg, **build_kwargs)
    return run, train(run, on_metrics=on_metrics)
