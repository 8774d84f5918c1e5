"""Online PPO from pixels on vector envs with discrete actions, optionally with an online UL objective.

Each iteration: collect ``horizon`` steps from ``num_envs`` envs, then one PPO update (epochs x
minibatches over the rollout), then this iteration's UL updates. UL runs *after* RL so that in
decoupled/frozen mode the features stored while acting are exactly what the PPO epochs would
recompute (see ``PPOAgent.caches_features``).

With ``overlap_ul`` the UL updates instead run in a worker thread while the main thread collects
(torch releases the GIL inside its ops, so on a CPU they use a second core): the policy acts with a
snapshot of the conv taken before those updates, the collection's UL-replay writes are held back
until they are done, and the PPO update follows once the worker has finished (see the field).

The paper's Atari variants are switches of one config:
  RL only      mode=end_to_end, ul=none
  ATC-init     mode=end_to_end, encoder_path=<exported ATC encoder>, ul=none
               (or in-loop: ul_schedule=front, ul_front_updates=10000, ul_updates=0, both starts 1e5)
  RL+ATC       mode=end_to_end, ul=atc
  ATC only     mode=decoupled, ul=atc (the defaults)
  frozen       mode=frozen, encoder_path=<exported encoder>, ul=none

UL replay layout: one FIFO ``Replay`` per env, each holding ``ul_replay_size / num_envs`` single
frames written step by step from the rollouts; a UL batch draws an equal share from every env's
replay. Samples never cross an env's write cursor (positives past it are masked as invalid).
With UL on, the agent acts uniformly at random and PPO does not update before ``rl_start_steps``.
A resumed run starts fresh episodes and an empty UL replay; everything else is restored.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from atcrl.data.replay import Replay
from atcrl.device import resolve_device
from atcrl.encoder_io import load_or_make_encoder
from atcrl.fastpath import FastPathConfig, prepare_module
from atcrl.nets.encoders import ConvEncoder
from atcrl.process import configure_process
from atcrl.resumable import RESUMABLE
from atcrl.rl.modes import EncoderMode
from atcrl.rl.ppo import ActorCritic, PPOAgent, PPOConfig
from atcrl.rl.rollout import Rollout
from atcrl.train.online_ul import OnlineUL, build_objective
from atcrl.train.ppo_step import PPOStep
from atcrl.ul.atc import ATC_PRESETS, ATCConfig
from atcrl.ul.optim import ULOptimConfig
from atcrl.ul.registry import atc_family

MetricsHook = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class PPOLoopConfig:
    """One online PPO run; defaults are the paper's Atari settings (Pong, "ATC only": decoupled + ATC)."""

    env: str = "atari:Pong"
    """Environment spec for make_vec_env (discrete actions)."""
    mode: EncoderMode = EncoderMode.decoupled
    """Who trains the conv: end_to_end (PPO loss), decoupled (UL only), frozen (nobody)."""
    steps: int = 25_000_000
    """Total agent steps (env steps = agent steps x action repeat)."""
    num_envs: int = 16
    """Parallel envs."""
    horizon: int = 128
    """Steps per env per iteration (an iteration is num_envs x horizon agent steps)."""
    clip_rewards: bool = True
    """Learn from sign(reward) (Atari); the logged episode return is always the raw score."""
    image_size: int = 84
    """Square observation side in pixels."""
    action_repeat: int = 0
    """Env steps per agent step; 0 = the family's default (Atari: frame skip 4)."""
    frame_stack: int = 0
    """Stacked frames per observation; 0 = the family's default (Atari: 4)."""
    encoder: str = "atari"
    """Conv architecture for a fresh encoder ("atari", "dmc", "dmlab")."""
    encoder_path: str = ""
    """Exported encoder to start from (.safetensors/.json or directory): frozen mode, or ATC-init end-to-end."""
    ul: str = "atc"
    """Online UL objective training the conv ("none" = no UL; see atcrl.ul.registry). Required when decoupled."""
    atc: ATCConfig = ATC_PRESETS["atari"]
    """Config of the ATC family (atc, ac, ats); other objectives use their registry defaults."""
    ul_updates: int = 6
    """UL updates per iteration at the start of UL training (see ul_schedule)."""
    ul_schedule: Literal["quadratic", "linear", "constant", "front"] = "quadratic"
    """How UL updates per iteration decay to 0 at the end of training; "front" does ul_front_updates in
    the first UL iteration and ul_updates in every later one."""
    ul_front_updates: int = 10_000
    """UL updates of the first UL iteration with ul_schedule="front" (in-loop ATC-init)."""
    ul_start_steps: int = 50_000
    """Agent steps collected before UL updates begin."""
    rl_start_steps: int = 100_000
    """Agent steps before PPO updates begin, acting uniformly at random until then, so UL gets a head
    start; without UL (ul=none) RL starts at once."""
    ul_replay_size: int = 100_000
    """Most recent agent steps kept for UL (split evenly over the envs)."""
    ul_lr: float = 1e-3
    """Peak UL learning rate (Adam)."""
    ul_lr_schedule: Literal["cosine", "constant"] = "cosine"
    """UL learning-rate schedule over all UL updates of the run."""
    ul_grad_clip: float = 10.0
    """Max UL gradient norm (0 = no clipping)."""
    overlap_ul: bool = field(default=False, metadata=RESUMABLE)
    """Run each iteration's UL updates in a worker thread while the main thread collects the rollout, for
    speed wherever the two can run at once (a second CPU core, a GPU). The policy acts with a snapshot of the
    conv taken before those updates, i.e. with the weights the serial schedule acts with, and the frames
    collected meanwhile reach the UL replay only after them; PPO updates once the worker is done, so RL and
    UL never write the conv at the same time. What changes: the UL updates of iteration k sample rollouts
    up to k-1, not k (a one-rollout lag); and in end_to_end mode the PPO update of rollout k starts from
    the conv after this iteration's UL updates, which acting did not see, so its first ratios are not
    exactly 1. An iteration whose UL replay is still empty (the first of a run, or of a resumption without
    the saved replay) runs serially. No effect without UL; it may change on --resume. It pays only where a
    core (or the GPU) would otherwise idle: PPO+ATC on Pong (16 envs, 6 UL updates per iteration, one torch
    thread) ran 1.24x faster on an otherwise idle 2-core CPU, and 0.7-1.04x on one already busy with other jobs
    (docs/performance.md)."""
    log_every: int = field(default=1, metadata=RESUMABLE)
    """Iterations between metric reports."""
    seed: int = 0
    """Seeds torch, the envs, action sampling, minibatch order and UL sampling."""
    device: str = field(default="auto", metadata=RESUMABLE)
    """"auto" (CUDA when available), "cpu", "cuda", "cuda:1", ..."""
    fast: FastPathConfig = field(default_factory=FastPathConfig, metadata=RESUMABLE)
    """How the networks run (precision, activation layout, compilation, CPU threads, allocator); it changes
    speed, not what is trained, so it may differ on --resume. FastPathConfig.fp32_eager() is the plain path."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    """Agent hyperparameters."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", EncoderMode(self.mode))
        if min(self.num_envs, self.horizon, self.log_every) < 1 or self.steps < 0:
            raise ValueError("num_envs, horizon and log_every must be >= 1 and steps >= 0")
        if min(self.ul_updates, self.ul_front_updates, self.ul_start_steps, self.rl_start_steps) < 0:
            raise ValueError("ul_updates, ul_front_updates, ul_start_steps and rl_start_steps must be >= 0")
        if self.ul_schedule not in ("quadratic", "linear", "constant", "front"):
            raise ValueError(f"unknown ul_schedule {self.ul_schedule!r}")
        has_ul = self.ul != "none"
        if self.mode is EncoderMode.decoupled and not has_ul:
            raise ValueError("decoupled mode trains the conv only with UL: set ul (e.g. atc), or use "
                             "mode=frozen for a fixed encoder")
        if self.mode is EncoderMode.frozen and has_ul:
            raise ValueError("a frozen encoder is never updated: set ul=none (or mode=decoupled to train it by UL)")
        if has_ul and self.ul_replay_size < 2 * self.num_envs:
            raise ValueError(f"ul_replay_size {self.ul_replay_size} is too small for {self.num_envs} envs")

    @property
    def batch_steps(self) -> int:
        """Agent steps per iteration."""
        return self.num_envs * self.horizon

    @property
    def iterations(self) -> int:
        return math.ceil(self.steps / self.batch_steps)

    def start_iterations(self) -> tuple[int, int]:
        """(first UL iteration, first RL iteration): an iteration i starts after i * batch_steps steps."""
        if self.ul == "none":
            return self.iterations + 1, 0
        ul_itr = self.ul_start_steps // self.batch_steps
        rl_itr = self.rl_start_steps // self.batch_steps
        if rl_itr == ul_itr and self.rl_start_steps > 0:
            rl_itr += 1  # UL, when it starts with RL, gets one iteration first (in-loop ATC-init)
        return ul_itr, rl_itr

    def ul_updates_at(self, itr: int) -> int:
        """UL updates in iteration ``itr``: the schedule decays from ul_updates at the first UL
        iteration towards 0 one iteration past the end of training."""
        first, _ = self.start_iterations()
        if itr < first:
            return 0
        if self.ul_schedule == "front":
            return self.ul_front_updates if itr == first else self.ul_updates
        remaining = (self.iterations + 1 - itr) / (self.iterations + 1 - first)  # 1 -> ~0
        power = {"quadratic": 2, "linear": 1, "constant": 0}[self.ul_schedule]
        return round(self.ul_updates * remaining**power)


def store_first(replays: Sequence[Replay | HeldWrites], obs: np.ndarray, frame_channels: int) -> None:
    """The first observation of every env's episode, one per env replay (newest frame only)."""
    for replay, o in zip(replays, obs):
        replay.add_first(o[-frame_channels:])


def store_step(replays: Sequence[Replay | HeldWrites], frame_channels: int, actions: np.ndarray,
               rewards: np.ndarray, next_obs: np.ndarray, terminated: np.ndarray, truncated: np.ndarray,
               final_obs: np.ndarray | None) -> None:
    """One vector step into the env replays; an ended episode stores its final frame, then the reset frame
    opens the next."""
    C = frame_channels
    for i, replay in enumerate(replays):
        done = terminated[i] or truncated[i]
        last = final_obs[i] if done else next_obs[i]
        replay.add_step(actions[i], float(rewards[i]), last[-C:], bool(terminated[i]), bool(truncated[i]))
        if done:
            replay.add_first(next_obs[i][-C:])


class HeldWrites:
    """Stands in for one env's UL replay while the UL worker samples that replay: keeps copies of the writes
    a collection makes (vector envs may reuse their observation buffers) and applies them later, in order."""

    def __init__(self) -> None:
        self.writes: list[tuple[np.ndarray, tuple[np.ndarray, float, bool, bool] | None]] = []
        """(frame, None) for add_first; (next frame, (action, reward, terminated, truncated)) for add_step."""

    def add_first(self, frame: np.ndarray) -> None:
        self.writes.append((np.array(frame), None))

    def add_step(self, action: np.ndarray | float, reward: float, next_frame: np.ndarray, terminated: bool,
                 truncated: bool) -> None:
        self.writes.append((np.array(next_frame), (np.array(action), reward, terminated, truncated)))

    def apply_to(self, replay: Replay) -> None:
        """Write everything held into ``replay`` and forget it."""
        for frame, step in self.writes:
            if step is None:
                replay.add_first(frame)
            else:
                action, reward, terminated, truncated = step
                replay.add_step(action, reward, frame, terminated, truncated)
        self.writes.clear()


class ULOverlap:
    """What ``overlap_ul`` adds to a run: the one worker thread running UL updates, the snapshot of the conv
    the policy acts with meanwhile, and the UL-replay writes held back until the worker is done."""

    def __init__(self, encoder: ConvEncoder, fast: FastPathConfig, num_envs: int):
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="atcrl-ul")
        # A fresh module, not a deep copy (a compiled encoder's copy would still call the original), built
        # under a forked RNG: its throwaway initial weights draw nothing from the run's random streams.
        with torch.random.fork_rng(devices=[]):
            snapshot = ConvEncoder(encoder.arch, encoder.in_shape)  # type: ignore[arg-type]
        snapshot.to(next(encoder.parameters()).device).requires_grad_(False)
        self.snapshot = prepare_module(snapshot, fast)
        """The conv the policy acts with while the worker trains the real one; its weights are copied in
        before each overlapped iteration's UL updates start."""
        self.held = [HeldWrites() for _ in range(num_envs)]

    def close(self) -> None:
        """Stop the worker thread once any update it is running has finished."""
        self.pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class PPORun:
    """Everything one run holds; ``train`` advances it, ``state_dict`` captures it (without env and replay)."""

    cfg: PPOLoopConfig
    env: Any
    agent: PPOAgent
    ul: OnlineUL | None
    """The UL objective training the conv, with its optimizer and the per-env FIFO replays it samples from."""
    device: torch.device
    frame_channels: int
    action_repeat: int
    iteration: int = 0
    """PPO iterations done (agent steps = iteration x batch_steps)."""
    episodes: int = 0
    """Training episodes finished."""
    obs: np.ndarray | None = None
    """Current observations of the vector env; None = reset before acting."""
    episode_return: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """[num_envs] raw score so far of each env's current episode."""
    episode_length: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """[num_envs] agent steps so far of each env's current episode."""
    process: dict[str, Any] = field(default_factory=dict)
    """What ``process.configure_process`` applied (threads, allocator), for logs and benchmarks."""
    ul_overlap: ULOverlap | None = None
    """With cfg.overlap_ul: the UL worker thread and what goes with it, made by the first overlapped
    iteration; ``stop_ul_thread`` ends the thread (``train`` does when it returns)."""
    _step: PPOStep | None = field(default=None, repr=False)
    """The minibatch update step (made at the first update after a build or a restore, see atcrl.train.ppo_step)."""

    @property
    def step_fn(self) -> PPOStep:
        """The run's minibatch update step (see atcrl.train.ppo_step), made on first use."""
        if self._step is None:
            self._step = PPOStep(self.agent)
        return self._step

    @property
    def step(self) -> int:
        """Agent steps taken."""
        return self.iteration * self.cfg.batch_steps

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"agent": self.agent.state_dict(), "iteration": self.iteration,
                                 "episodes": self.episodes}
        if self.ul is not None:
            state.update(self.ul.state_dict())
        return state

    def stop_ul_thread(self) -> None:
        """End the UL worker thread of overlap_ul, if there is one; a later iteration starts a new one."""
        if self.ul_overlap is not None:
            self.ul_overlap.close()
            self.ul_overlap = None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a run; envs restart their episodes and the UL replay refills from empty."""
        self.agent.load_state_dict(state["agent"])
        self._step = None  # a captured step points at the optimizer states just replaced
        self.iteration, self.episodes = int(state["iteration"]), int(state["episodes"])
        if self.ul is not None:
            self.ul.load_state_dict(state)
        self.obs = None


def build_run(cfg: PPOLoopConfig, *, encoder: ConvEncoder | None = None) -> PPORun:
    """Vector env, encoder (given, loaded from cfg.encoder_path, or fresh), agent and online UL."""
    process, device, env, meta, encoder = build_env_and_encoder(cfg, encoder)
    obs_shape = tuple(env.single_observation_space.shape)
    net = ActorCritic(encoder, int(env.single_action_space.n), cfg.ppo.hidden)
    agent = PPOAgent(net, cfg.mode, cfg.ppo, device, fast=cfg.fast)
    ul = build_online_ul(cfg, agent.net.encoder, net.n_actions, (meta.frame_channels, *obs_shape[1:]),
                         meta.frame_stack, device)
    # After both exist, so every conv is covered: the agent's (shared) conv and the UL momentum target.
    prepare_module(agent.net, cfg.fast)
    if ul is not None:
        prepare_module(ul.objective, cfg.fast)
    return PPORun(cfg, env, agent, ul, device, meta.frame_channels, meta.action_repeat, process=process)


def build_env_and_encoder(cfg: PPOLoopConfig, encoder: ConvEncoder | None
                          ) -> tuple[dict[str, Any], torch.device, Any, Any, ConvEncoder]:
    """The start of every PPO run: process settings, seed, device, the vector env (discrete actions) and its
    meta, and the conv (given, loaded from cfg.encoder_path, or fresh). Returns (process, device, env, meta, conv)."""
    from atcrl.envs import env_meta, make_vec_env

    process = configure_process(cfg.fast)  # threads and allocator, before anything large is allocated
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    env = make_vec_env(cfg.env, cfg.num_envs, seed=cfg.seed, image_size=cfg.image_size,
                       frame_stack=cfg.frame_stack or None, action_repeat=cfg.action_repeat or None)
    meta = env_meta(env)
    if not meta.discrete:
        raise ValueError(f"PPO here needs discrete actions, but {cfg.env} has continuous ones; train it with SAC")
    encoder = load_or_make_encoder(encoder, cfg.encoder_path, cfg.encoder, tuple(env.single_observation_space.shape),
                                   frozen=cfg.mode is EncoderMode.frozen)
    return process, device, env, meta, encoder


def build_online_ul(cfg: PPOLoopConfig, encoder: ConvEncoder, n_actions: int, frame_shape: tuple[int, ...],
                    frame_stack: int, device: torch.device) -> OnlineUL | None:
    """The run's online UL (None with ul="none"): cfg.ul around the agent's conv, one FIFO replay per env of
    ``frame_shape`` single frames, and the optimizer over all of the run's UL updates."""
    if cfg.ul == "none":
        return None
    objective = build_objective(cfg.ul, encoder, cfg.atc if atc_family(cfg.ul) else None,
                                device=device, action_dim=n_actions, discrete_actions=True)
    capacity = math.ceil(cfg.ul_replay_size / cfg.num_envs)
    replays = [Replay(capacity, frame_shape, frame_stack=frame_stack, action_dtype=np.int64)
               for _ in range(cfg.num_envs)]
    total = sum(cfg.ul_updates_at(i) for i in range(cfg.iterations))
    optim = ULOptimConfig(lr=cfg.ul_lr, warmup_updates=0, total_updates=max(1, total),
                          schedule=cfg.ul_lr_schedule, grad_clip=cfg.ul_grad_clip)
    return OnlineUL(objective, replays, optim, cfg.fast, device)


def seeded(seed: int, itr: int, stream: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator for one purpose in one iteration: a resumed run draws the same numbers."""
    return torch.Generator(device).manual_seed(int(np.random.SeedSequence([seed, itr, stream]).generate_state(1)[0]))


def collect(run: PPORun, rollout: Rollout | None, ul_writes: Sequence[Replay | HeldWrites] | None = None
            ) -> list[tuple[float, int]]:
    """Step the envs ``horizon`` times; fill ``rollout`` (None = act uniformly, store nothing for RL)
    and the UL replay. Returns the (raw score, length) of every episode that ended.

    ul_writes: one per env, where the UL-replay writes go; None = the UL replays themselves."""
    cfg, agent, env = run.cfg, run.agent, run.env
    if run.ul is not None and ul_writes is None:
        ul_writes = run.ul.replays
    N = cfg.num_envs
    if run.obs is None:
        run.obs, _ = env.reset(seed=cfg.seed + 7919 * run.iteration)
        run.episode_return, run.episode_length = np.zeros(N), np.zeros(N, np.int64)
        if ul_writes is not None:
            store_first(ul_writes, run.obs, run.frame_channels)
    act_gen = seeded(cfg.seed, run.iteration, 0, run.device)
    n_actions = agent.net.n_actions
    finished: list[tuple[float, int]] = []
    for t in range(cfg.horizon):
        if rollout is None:
            actions = torch.randint(n_actions, (N,), generator=act_gen, device=run.device)
        else:
            out = agent.act(torch.from_numpy(run.obs), generator=act_gen)
            actions = out.action
            rollout.inputs[t], rollout.actions[t] = out.policy_input, actions
            rollout.logp[t], rollout.values[t] = out.logp, out.value
        actions_np = actions.cpu().numpy()
        next_obs, reward, terminated, truncated, info = env.step(actions_np)
        done = terminated | truncated
        final_obs = info.get("final_obs") if done.any() else None
        if rollout is not None:
            learn = np.sign(reward) if cfg.clip_rewards else reward
            rollout.rewards[t] = torch.as_tensor(learn, dtype=torch.float32)
            rollout.terminated[t] = torch.as_tensor(terminated)
            rollout.truncated[t] = torch.as_tensor(truncated)
            cut = np.flatnonzero(truncated & ~terminated)
            rollout.final_values[t] = 0.0
            if cut.size:  # bootstrap a time-limit cut from the final observation's value
                rollout.final_values[t, torch.as_tensor(cut, device=run.device)] = agent.value(
                    np.stack([final_obs[i] for i in cut]))
        if ul_writes is not None:
            store_step(ul_writes, run.frame_channels, actions_np, reward, next_obs, terminated, truncated,
                       final_obs)
        run.episode_return += reward
        run.episode_length += 1
        for i in np.flatnonzero(done):
            finished.append((float(run.episode_return[i]), int(run.episode_length[i])))
            run.episode_return[i], run.episode_length[i] = 0.0, 0
        run.obs = next_obs
    if rollout is not None:
        rollout.last_values = agent.value(torch.from_numpy(run.obs))
    run.episodes += len(finished)
    return finished


def iterate(run: PPORun, rollout: Rollout) -> tuple[dict[str, float], list[tuple[float, int]]]:
    """One iteration: collect, PPO update (once RL has started), UL updates (once UL has started).

    Returns the iteration's metrics and the (raw score, length) of the episodes that ended in it."""
    cfg, itr = run.cfg, run.iteration
    rl_on = itr >= cfg.start_iterations()[1]
    n_ul = cfg.ul_updates_at(itr) if run.ul is not None else 0
    if n_ul and cfg.overlap_ul and all(len(replay) for replay in run.ul.replays):
        return _iterate_overlapped(run, rollout, rl_on, n_ul)
    t0 = time.perf_counter()
    finished = collect(run, rollout if rl_on else None)
    t1 = time.perf_counter()
    metrics = _rl_update(run, rollout) if rl_on else {}
    t2 = time.perf_counter()
    if n_ul:
        metrics.update(run.ul.update(np.random.default_rng([cfg.seed, itr, 2]), n_ul))
    t3 = time.perf_counter()
    return end_iteration(run, metrics, n_ul, t3 - t0, collect_s=t1 - t0, rl_s=t2 - t1, ul_s=t3 - t2), finished


def _rl_update(run: PPORun, rollout: Rollout) -> dict[str, float]:
    """The PPO update of this iteration's rollout; its metrics."""
    itr = run.iteration
    return run.agent.update(rollout, progress=itr / run.cfg.iterations, generator=seeded(run.cfg.seed, itr, 1),
                            step=run.step_fn)


def end_iteration(run: PPORun, metrics: dict[str, float], n_ul: int, seconds: float,
                   **perf: float) -> dict[str, float]:
    """Count the iteration done; its metrics with the UL update count, steps/s and ``perf/<name>`` timings."""
    run.iteration += 1
    metrics.update({"ul/updates_this_iteration": float(n_ul),
                    "perf/steps_per_s": run.cfg.batch_steps / max(seconds, 1e-9)})
    metrics.update({f"perf/{name}": value for name, value in perf.items()})
    return metrics


def _timed_ul_updates(ul: OnlineUL, rng: np.random.Generator, n: int) -> tuple[dict[str, float], float]:
    """``ul.update(rng, n)`` and the seconds it took (run in the UL worker thread)."""
    start = time.perf_counter()
    metrics = ul.update(rng, n)
    return metrics, time.perf_counter() - start


def _iterate_overlapped(run: PPORun, rollout: Rollout, rl_on: bool, n_ul: int
                        ) -> tuple[dict[str, float], list[tuple[float, int]]]:
    """``iterate`` with overlap_ul: the UL updates run in the worker thread while this thread collects with
    the conv snapshot; then the held replay writes land and PPO updates.

    The UL updates sample with the same generator as the serial schedule, from the replay as the previous
    iterations left it, and enter their own autocast (``ul_step``; autocast state is per thread) as they do
    there. Metrics as in ``iterate``; perf/ul_s is the worker's own time, perf/ul_wait_s the time spent
    waiting for it after collecting.
    """
    cfg, itr, ul, agent = run.cfg, run.iteration, run.ul, run.agent
    assert ul is not None
    if run.ul_overlap is None:
        run.ul_overlap = ULOverlap(agent.net.encoder, cfg.fast, cfg.num_envs)
    overlap = run.ul_overlap
    t0 = time.perf_counter()
    overlap.snapshot.load_state_dict(agent.net.encoder.state_dict())  # before the worker may change the conv
    future = overlap.pool.submit(_timed_ul_updates, ul, np.random.default_rng([cfg.seed, itr, 2]), n_ul)
    agent.acting_encoder = overlap.snapshot
    try:
        finished = collect(run, rollout if rl_on else None, overlap.held)
    finally:
        agent.acting_encoder = None
        t1 = time.perf_counter()
        wait_for([future])  # whatever happened: nothing below runs while the worker uses the conv or replay
        t2 = time.perf_counter()
        for held, replay in zip(overlap.held, ul.replays):
            held.apply_to(replay)
        t3 = time.perf_counter()
    ul_metrics, ul_s = future.result()  # raises the worker's error, e.g. FloatingPointError for a NaN loss
    metrics = _rl_update(run, rollout) if rl_on else {}
    t4 = time.perf_counter()
    metrics.update(ul_metrics)
    return end_iteration(run, metrics, n_ul, t4 - t0, collect_s=(t1 - t0) + (t3 - t2), rl_s=t4 - t3, ul_s=ul_s,
                          ul_wait_s=t2 - t1), finished


def train(run: PPORun, *, on_metrics: MetricsHook | None = None,
          on_iteration: Callable[[PPORun], None] | None = None) -> list[tuple[int, dict[str, float]]]:
    """Run from ``run.iteration`` to the end; returns every (agent step, metrics) report.

    on_metrics(step, metrics) gets averages over each ``log_every`` iterations: rl/episode_return is
    the mean raw score of the episodes that ended in them; counters (rl/episodes, ul/updates,
    perf/env_steps) are their current values. on_iteration(run) is called after every iteration
    (e.g. to checkpoint); a FloatingPointError from a NaN loss ends the run before it. With overlap_ul
    the UL worker thread has finished each iteration before these calls, and ends when this returns.
    """
    shape, dtype = run.agent.policy_input_spec()
    rollout = Rollout.empty(run.cfg.horizon, run.cfg.num_envs, shape, dtype, run.device)
    try:
        return run_iterations(run, lambda: iterate(run, rollout), on_metrics=on_metrics, on_iteration=on_iteration)
    finally:
        run.stop_ul_thread()


def run_iterations(run: Any, iterate_once: Callable[[], tuple[dict[str, float], list[tuple[float, int]]]], *,
                   on_metrics: MetricsHook | None = None, on_iteration: Callable[[Any], None] | None = None
                   ) -> list[tuple[int, dict[str, float]]]:
    """Call ``iterate_once`` (one iteration: its metrics and finished episodes) until ``run.iteration`` reaches
    ``run.cfg.iterations``, reporting as ``train`` describes; for every loop built like ``PPORun`` (iteration,
    step, episodes, action_repeat, ul)."""
    cfg = run.cfg
    history: list[tuple[int, dict[str, float]]] = []
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    episodes: list[tuple[float, int]] = []
    while run.iteration < cfg.iterations:
        metrics, finished = iterate_once()
        episodes += finished
        for k, v in metrics.items():
            sums[k], counts[k] = sums.get(k, 0.0) + v, counts.get(k, 0) + 1
        if run.iteration % cfg.log_every == 0 or run.iteration == cfg.iterations:
            report = {k: sums[k] / counts[k] for k in sums}
            if episodes:
                report["rl/episode_return"] = float(np.mean([r for r, _ in episodes]))
                report["rl/episode_length"] = float(np.mean([n for _, n in episodes]))
            report.update({"rl/episodes": float(run.episodes),
                           "perf/env_steps": float(run.step * run.action_repeat)})
            if run.ul is not None:
                report["ul/updates"] = float(run.ul.updates)
            history.append((run.step, report))
            if on_metrics is not None:
                on_metrics(run.step, report)
            sums.clear(), counts.clear(), episodes.clear()
        if on_iteration is not None:
            on_iteration(run)
    return history


def train_ppo(cfg: PPOLoopConfig, *, on_metrics: MetricsHook | None = None, **build_kwargs: Any
              ) -> tuple[PPORun, list[tuple[int, dict[str, float]]]]:
    """Build a run and train it to the end; returns the run and its metric history."""
    run = build_run(cfg, **build_kwargs)
    return run, train(run, on_metrics=on_metrics)
