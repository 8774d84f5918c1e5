"""Online SAC from pixels: act, store, update; in decoupled mode also one UL update per RL update.

``build_run`` makes everything a run holds (envs, agent, replay, UL objective and optimizer);
``train`` drives it to ``cfg.steps`` agent steps and reports metrics through a callback;
``train_sac`` does both. A run's ``state_dict`` holds what resuming needs apart from the replay.

Acting: for the first ``warmup_steps`` agent steps the action is tanh of a Gaussian with a fixed
std (``sac.warmup_std``) around the untrained actor's mean; afterwards the learned policy samples
and every agent step is followed by one SAC update (and, in decoupled mode, one UL update).
Evaluation runs deterministic episodes (tanh of the mean) on a separate env.

With ``overlap_env`` the training env lives on a worker thread (atcrl.envs.threaded) and, once updates
run, each agent step's env step runs there while that step's update runs here; the update then samples
the replay without the newest transition (see the field's docstring).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from atcrl.data.device_replay import DeviceReplay
from atcrl.data.replay import Replay
from atcrl.device import Staging, resolve_device
from atcrl.encoder_io import load_or_make_encoder
from atcrl.envs.meta import EnvMeta
from atcrl.envs.threaded import ThreadedEnv
from atcrl.fastpath import FastPathConfig, prepare_module
from atcrl.nets.encoders import ConvEncoder
from atcrl.process import configure_process
from atcrl.resumable import RESUMABLE
from atcrl.rl.modes import EncoderMode
from atcrl.rl.sac import LatentDType, SACAgent, SACConfig
from atcrl.train.config_args import parse_overrides
from atcrl.train.online_ul import OnlineUL, build_objective, check_objective
from atcrl.train.sac_step import SACStep
from atcrl.ul.base import Objective
from atcrl.ul.optim import ULOptimConfig

__all__ = [
    "REFERENCE_STEPS", "MetricsHook", "SACLoopConfig", "SACRun", "build_run", "evaluate", "paper_config",
    "train", "train_sac", "update",
]

MetricsHook = Callable[[int, dict[str, float]], None]

# Paper run lengths in agent steps after the warm-up (docs/reference-settings.md, "Online SAC + ATC for DMC").
REFERENCE_STEPS = {"cartpole-swingup": 37_500, "ball_in_cup-catch": 75_000, "cheetah-run": 250_000,
                   "walker-walk": 250_000, "hopper-hop": 250_000}


@dataclass(frozen=True)
class SACLoopConfig:
    """One online SAC run; defaults are the paper's DMControl settings (cartpole-swingup, decoupled ATC)."""

    env: str = "dmc:cartpole-swingup"
    """Environment spec for make_env (continuous actions in [-1, 1])."""
    mode: EncoderMode = EncoderMode.decoupled
    """Who trains the conv: end_to_end (critic loss), decoupled (UL only), frozen (nobody)."""
    steps: int = 47_500
    """Total agent steps including the warm-up (env steps = agent steps x action repeat)."""
    warmup_steps: int = 10_000
    """Agent steps acting with the fixed warm-up std before RL (and UL) updates start."""
    batch_size: int = 256
    """SAC minibatch size (cheetah: 512)."""
    replay_capacity: int = 100_000
    """Replay size in observations."""
    n_step: int = 1
    """n-step return for the critic target."""
    discount: float = 0.99
    """Discount gamma."""
    image_size: int = 84
    """Square observation side in pixels."""
    action_repeat: int = 0
    """Env steps per agent step; 0 = the task's default (cartpole 8; cheetah, ball_in_cup, reacher 4; walker, finger 2)."""
    frame_stack: int = 0
    """Stacked frames per observation; 0 = the family's default (3 for DMC)."""
    fast_render: bool = False
    """DMC: render without shadows, reflections and multisampling (faster; pixels differ from the paper's)."""
    overlap_env: bool = field(default=False, metadata=RESUMABLE)
    """Step the training env on a worker thread while the agent update runs. It hides the env step (DMC: physics
    and rendering) behind the update, which pays off only when a core is otherwise idle (cartpole, default
    rendering, 2 idle cores: frozen-encoder SAC 1.15x; decoupled 1.00x, whose update dwarfs the env step; with
    every core busy the update slows by about as much as it gains). The update of step t then samples the
    replay before transition t is added (it holds up to t - 1): a one-transition lag, so results differ
    slightly from a run without it. Warm-up steps (no updates) are not overlapped; evaluation stays on the
    calling thread with its own env. It changes speed and this lag only, so it may differ on --resume."""
    encoder: str = "dmc"
    """Conv architecture for a fresh encoder ("dmc", "atari", "dmlab")."""
    encoder_path: str = ""
    """Exported encoder to start from (.safetensors/.json or directory); required in frozen mode."""
    device_replay: bool | None = field(default=None, metadata=RESUMABLE)
    """Keep the replay in the compute device's memory and sample it there (atcrl.data.device_replay): a batch
    never crosses PCIe and sampling can be captured with the update. None = on where the device is CUDA (100k
    DMC frames are ~2.1 GB of GPU memory), off on the CPU. It changes speed and which (equally distributed)
    batches are drawn, not the algorithm, so it may differ on --resume."""
    latent_replay: bool = True
    """Frozen mode: store the conv's output instead of pixels and use the sub-pixel shift."""
    latent_dtype: LatentDType = "float16"
    """How latent_replay stores the conv's output: "float16" (32x7x7 DMC: 6.7x less memory than 3x84x84 pixels)
    or "uint8" (13.4x less), quantised with one step fixed from the first encoded observation, whose largest
    feature times 2 maps to 255 (larger values saturate; error within half a step below that)."""
    ul: str = "atc"
    """UL objective training the conv in decoupled mode (see atcrl.ul.registry)."""
    ul_args: tuple[str, ...] = ()
    """Other settings of the UL objective's config as NAME=VALUE, as `atcrl pretrain --objective-args` takes them,
    e.g. `--sac.ul-args shift_prob=0.5 target_tau=0.05`. An objective whose batch is then no longer the critic's
    shifted minibatch (another shift, Δt, or batch) samples its own from the replay."""
    ul_batch_size: int = 0
    """UL batch; 0 = batch_size, which lets ATC reuse the critic's shifted (obs, next_obs) minibatch."""
    ul_lr: float = 1e-3
    """Peak UL learning rate (Adam)."""
    ul_lr_schedule: Literal["cosine", "constant"] = "cosine"
    """UL learning-rate schedule over the run's updates: "cosine" (to 0 at the end) or "constant"."""
    ul_grad_clip: float = 10.0
    """Max UL gradient norm (0 = no clipping)."""
    eval_every: int = field(default=1000, metadata=RESUMABLE)
    """Agent steps between evaluations (also at step 0 and at the end); 0 = only at the end."""
    eval_episodes: int = field(default=10, metadata=RESUMABLE)
    """Deterministic episodes per evaluation."""
    log_every: int = field(default=1000, metadata=RESUMABLE)
    """Agent steps between training-metric reports (averages over the interval)."""
    seed: int = 0
    """Seeds torch, the replay sampler and the envs (the eval env gets seed + 10000)."""
    device: str = field(default="auto", metadata=RESUMABLE)
    """"auto" (CUDA when available), "cpu", "cuda", "cuda:1", ..."""
    fast: FastPathConfig = field(default_factory=FastPathConfig, metadata=RESUMABLE)
    """How the networks run (precision, activation layout, compilation, CPU threads, allocator); it changes
    speed, not what is trained, so it may differ on --resume. FastPathConfig.fp32_eager() is the plain path."""
    sac: SACConfig = field(default_factory=SACConfig)
    """Agent hyperparameters."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", EncoderMode(self.mode))
        if self.steps < 0 or not 0 <= self.warmup_steps:
            raise ValueError(f"steps and warmup_steps must be >= 0, got {self.steps}, {self.warmup_steps}")
        if self.batch_size < 1 or self.ul_batch_size < 0 or self.n_step < 1:
            raise ValueError("batch_size and n_step must be >= 1 and ul_batch_size >= 0")
        if self.replay_capacity < self.batch_size + 1:
            raise ValueError(f"replay_capacity {self.replay_capacity} cannot hold a batch of {self.batch_size}")
        if self.eval_every < 0 or self.eval_episodes < 0 or self.log_every < 1:
            raise ValueError("eval_every and eval_episodes must be >= 0, log_every >= 1")
        if self.latent_dtype not in ("float16", "uint8"):
            raise ValueError(f"latent_dtype must be 'float16' or 'uint8', got {self.latent_dtype!r}")


def paper_config(env: str = "dmc:cartpole-swingup", **overrides: Any) -> SACLoopConfig:
    """The paper's settings for a DMC task: reference run length, and batch 512 / lr 2e-4 for cheetah."""
    task = env.split(":", 1)[-1]
    values: dict[str, Any] = {"env": env}
    if task in REFERENCE_STEPS:
        values["steps"] = REFERENCE_STEPS[task] + SACLoopConfig.warmup_steps
    if task.startswith("cheetah"):
        values.update(batch_size=512, sac=SACConfig(q_lr=2e-4, pi_lr=2e-4))
    return SACLoopConfig(**{**values, **overrides})


@dataclass
class SACRun:
    """Everything one run holds; ``train`` advances it, ``state_dict`` captures it (without the replay)."""

    cfg: SACLoopConfig
    env: Any
    eval_env: Any
    meta: EnvMeta
    agent: SACAgent
    replay: Replay
    ul: OnlineUL | None
    """Decoupled mode: the UL objective training the conv, with its optimizer (it samples from ``replay``)."""
    rng: np.random.Generator
    act_generator: torch.Generator
    process: dict[str, Any] = field(default_factory=dict)
    """What ``process.configure_process`` applied (threads, allocator), for logs and benchmarks."""
    step: int = 0
    """Agent steps taken."""
    episodes: int = 0
    """Training episodes finished."""
    evaluated_at: int = -1
    """Step of the last evaluation (a resumed run does not repeat it)."""
    obs: Any = None
    """The current policy input (pixels, or a latent in latent mode); None = reset before acting."""
    staging: Staging | None = None
    """Host-to-device copies of observations through page-locked memory (set where the replay is on the device)."""
    _step: SACStep | None = field(default=None, repr=False)
    """The update step (made at the first update after a build or a restore, see atcrl.train.sac_step)."""

    def close(self) -> None:
        """Close both envs; with ``overlap_env`` this also ends the training env's worker thread."""
        _close_envs(self.env, self.eval_env)

    @property
    def objective(self) -> Objective | None:
        """The UL objective training the conv (decoupled mode), else None."""
        return None if self.ul is None else self.ul.objective

    @property
    def reuses_rl_batch(self) -> bool:
        """Whether the UL objective trains on the critic's shifted (obs, next_obs) minibatch, as the reference's
        online SAC + ATC does: only where that minibatch is exactly the objective's own batch (independent pairs at Δt 1 =
        1-step transitions, the same batch size, the same random shift on both sides) and the objective can
        score the critic's conv features (``SamplingNeed.scores_features``); else it samples its own."""
        need = None if self.objective is None else self.objective.sampling
        sac_shift = (self.cfg.sac.shift_pad, 1.0) if self.cfg.sac.shift_pad else (0, 0.0)
        return (need is not None and need.kind == "pairs" and need.run == 1 and need.delta_t == 1 == self.cfg.n_step
                and need.batch_size == self.cfg.batch_size and need.scores_features and need.shift == sac_shift)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "agent": self.agent.state_dict(), "step": self.step, "episodes": self.episodes,
            "evaluated_at": self.evaluated_at, "rng": self.rng.bit_generator.state, "act_generator": self.act_generator.get_state(),
        }
        if self.ul is not None:
            state.update(self.ul.state_dict())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a run; the replay starts empty, so updates wait until it holds a batch again."""
        self.agent.load_state_dict(state["agent"])
        self.step, self.episodes = int(state["step"]), int(state["episodes"])
        self.evaluated_at = int(state["evaluated_at"])
        self.rng.bit_generator.state = state["rng"]
        self.act_generator.set_state(state["act_generator"])
        if self.ul is not None:
            self.ul.load_state_dict(state)
        self.obs = None
        self._step = None  # a captured step points at the optimizer states just replaced

    @property
    def step_fn(self) -> SACStep:
        """The run's update step (see atcrl.train.sac_step), made on first use."""
        if self._step is None:
            self._step = SACStep(self)
        return self._step


def _make_envs(cfg: SACLoopConfig):
    from atcrl.envs import env_meta, make_env

    kwargs = {"image_size": cfg.image_size, "action_repeat": cfg.action_repeat or None,
              "frame_stack": cfg.frame_stack or None, "fast_render": cfg.fast_render}
    make_train_env = functools.partial(make_env, cfg.env, seed=cfg.seed, **kwargs)
    # overlap_env: the training env is made, stepped and closed on its own worker thread only.
    env = ThreadedEnv(make_train_env) if cfg.overlap_env else make_train_env()
    try:
        meta = env_meta(env)
        if meta.discrete:
            raise ValueError(f"SAC needs continuous actions, but {cfg.env} has discrete ones; train it with PPO")
        return env, make_env(cfg.env, seed=cfg.seed + 10_000, **kwargs), meta
    except BaseException:
        env.close()
        raise


def build_run(
    cfg: SACLoopConfig, *, encoder: ConvEncoder | None = None,
    objective_factory: Callable[[ConvEncoder], Objective] | None = None,
) -> SACRun:
    """Envs, encoder (given, loaded from cfg.encoder_path, or fresh), agent, replay and UL objective.

    objective_factory: builds the decoupled-mode objective around the agent's conv (default: the
    registry's ``cfg.ul`` with its default config, batch size set to the UL batch).
    """
    process = configure_process(cfg.fast)  # threads and allocator, before anything large is allocated
    torch.manual_seed(cfg.seed)
    env, eval_env, meta = _make_envs(cfg)
    try:
        return _build_around(cfg, env, eval_env, meta, process, encoder, objective_factory)
    except BaseException:  # a bad encoder, say: the envs (and an overlap_env worker thread) end now, not at GC
        _close_envs(env, eval_env)
        raise


def _close_envs(env: Any, eval_env: Any) -> None:
    try:
        env.close()
    finally:
        eval_env.close()


def _build_around(cfg: SACLoopConfig, env: Any, eval_env: Any, meta: EnvMeta, process: dict[str, Any],
                  encoder: ConvEncoder | None, objective_factory: Callable[[ConvEncoder], Objective] | None) -> SACRun:
    """build_run once the envs exist."""
    device = resolve_device(cfg.device)
    obs_shape = tuple(env.observation_space.shape)
    encoder = load_or_make_encoder(encoder, cfg.encoder_path, cfg.encoder, obs_shape,
                                   frozen=cfg.mode is EncoderMode.frozen)
    latent = cfg.mode is EncoderMode.frozen and cfg.latent_replay
    action_shape = tuple(env.action_space.shape)
    agent = SACAgent(encoder, int(np.prod(action_shape)), cfg.mode, cfg.sac, latent_obs=latent,
                     latent_dtype=cfg.latent_dtype, device=device, fast=cfg.fast)
    # Latent replay: one latent per stacked observation, so nothing to stack at sample time.
    frame_shape = encoder.feature_shape if latent else (obs_shape[0] // meta.frame_stack, *obs_shape[1:])
    frame_stack = 1 if latent else meta.frame_stack
    on_device = device.type == "cuda" if cfg.device_replay is None else cfg.device_replay
    if on_device:
        replay: Replay | DeviceReplay = DeviceReplay(
            cfg.replay_capacity, frame_shape, frame_stack=frame_stack, action_shape=action_shape, device=device,
            frame_dtype=getattr(torch, cfg.latent_dtype) if latent else torch.uint8)
    else:
        replay = Replay(cfg.replay_capacity, frame_shape, frame_stack=frame_stack, action_shape=action_shape,
                        frame_dtype=np.dtype(cfg.latent_dtype) if latent else np.uint8)
    ul = None
    if cfg.mode is EncoderMode.decoupled:
        if objective_factory is not None:
            objective = check_objective(objective_factory(agent.encoder).to(device), agent.encoder)
        else:
            objective = build_objective(cfg.ul, agent.encoder, _default_ul_config(cfg), device=device,
                                        action_dim=agent.action_dim)
        ul_cfg = ULOptimConfig(lr=cfg.ul_lr, warmup_updates=0, total_updates=max(1, cfg.steps - cfg.warmup_steps),
                               schedule=cfg.ul_lr_schedule, grad_clip=cfg.ul_grad_clip)
        if on_device and objective.sampling.kind != "pairs":
            raise ValueError(f"the replay on the device samples pairs and transitions; {cfg.ul!r} needs sequences: "
                             "set device_replay False")
        ul = OnlineUL(objective, [replay], ul_cfg, cfg.fast, device)
    # After both exist, so every conv is covered: the agent's (shared) conv and its target, the UL target.
    prepare_module(agent, cfg.fast)
    if ul is not None:
        prepare_module(ul.objective, cfg.fast)
    return SACRun(cfg, env, eval_env, meta, agent, replay, ul, np.random.default_rng(cfg.seed),
                  torch.Generator(device).manual_seed(cfg.seed), process, staging=Staging(device) if on_device else None)


def _default_ul_config(cfg: SACLoopConfig) -> Any:
    """The registry's default config of ``cfg.ul`` with its batch size set to the UL batch, then ``cfg.ul_args``."""
    from atcrl.ul.registry import default_config

    ul_cfg = default_config(cfg.ul)
    if dataclasses.is_dataclass(ul_cfg) and any(f.name == "batch_size" for f in dataclasses.fields(ul_cfg)):
        ul_cfg = dataclasses.replace(ul_cfg, batch_size=cfg.ul_batch_size or cfg.batch_size)
    overrides = parse_overrides(ul_cfg, cfg.ul_args, what=f"UL objective {cfg.ul!r}")
    return dataclasses.replace(ul_cfg, **overrides) if overrides else ul_cfg


def _policy_input(run: SACRun, obs: np.ndarray) -> tuple[torch.Tensor, Any]:
    """(what the agent acts on, what the replay stores) for a stacked pixel observation.

    With the replay on the device the observation is copied there once: the policy reads it and the replay
    stores its newest frame (or its latent) from it, so acting costs that copy and the action's copy back.
    """
    pixels = torch.from_numpy(np.ascontiguousarray(obs))
    on_device = isinstance(run.replay, DeviceReplay)
    if on_device:
        pixels = run.staging(pixels)
    if run.agent.latent_obs:  # the frozen conv runs once per observation, here
        z = run.agent.latent(pixels[None])[0]
        if on_device:
            return z, z
        z = z.cpu()
        return z, z.numpy()
    return pixels, pixels[-run.replay.frame_shape[0]:] if on_device else obs[-run.replay.frame_shape[0]:]


def evaluate(run: SACRun, episodes: int) -> dict[str, float]:
    """Mean/std return and mean length of deterministic episodes on the eval env."""
    returns, lengths = [], []
    for _ in range(episodes):
        obs, _ = run.eval_env.reset()
        total, length, done = 0.0, 0, False
        while not done:
            action = run.agent.act(_policy_input(run, obs)[0], "deterministic")
            obs, reward, terminated, truncated, _ = run.eval_env.step(action)
            total, length, done = total + float(reward), length + 1, terminated or truncated
        returns.append(total)
        lengths.append(length)
    return {"eval/return_mean": float(np.mean(returns)), "eval/return_std": float(np.std(returns)),
            "eval/length_mean": float(np.mean(lengths))}


def update(run: SACRun) -> None:
    """One SAC update and, in decoupled mode, one UL update (on the same minibatch when it can).

    Its metrics accumulate in the run's step (``run.step_fn.read()`` returns their interval means)."""
    run.step_fn()


def train(run: SACRun, *, on_metrics: MetricsHook | None = None,
          on_checkpoint: Callable[[SACRun], None] | None = None,
          on_step: Callable[[SACRun], None] | None = None) -> list[tuple[int, dict[str, float]]]:
    """Run from ``run.step`` to ``cfg.steps`` agent steps; returns every (step, metrics) report.

    on_metrics(step, metrics) gets interval averages of the training metrics (rl/, ul/, perf/) every
    ``log_every`` steps and the eval/ metrics at each evaluation. on_checkpoint(run) is called
    after each evaluation, on_step(run) after every agent step (its update and any report included);
    an exception (e.g. FloatingPointError from a NaN loss) ends the run before any further callback,
    so a diverged run is never checkpointed.
    """
    cfg, agent, replay = run.cfg, run.agent, run.replay
    repeat = run.meta.action_repeat
    history: list[tuple[int, dict[str, float]]] = []
    returns: list[float] = []
    episode_return, tick, tick_step = 0.0, time.perf_counter(), run.step

    def learn() -> None:
        if replay.num_transitions >= cfg.batch_size:
            update(run)

    def report(step: int, metrics: dict[str, float]) -> None:
        history.append((step, metrics))
        if on_metrics is not None:
            on_metrics(step, metrics)

    def evaluate_now(step: int) -> None:
        nonlocal tick
        start = time.perf_counter()
        run.evaluated_at = step
        if cfg.eval_episodes > 0:
            report(step, {**evaluate(run, cfg.eval_episodes), "perf/env_steps": float(step * repeat)})
        if on_checkpoint is not None:
            if run._step is not None:
                run._step.check_finite()  # a NaN found only now (captured updates) must not be checkpointed
            on_checkpoint(run)
        tick += time.perf_counter() - start  # training throughput excludes evaluation and checkpoints

    while run.step < cfg.steps:
        if cfg.eval_every and run.step % cfg.eval_every == 0 and run.evaluated_at != run.step:
            evaluate_now(run.step)
        if run.obs is None:
            obs, _ = run.env.reset()
            run.obs, frame = _policy_input(run, obs)
            replay.add_first(frame)
            episode_return = 0.0
        warm = run.step < cfg.warmup_steps
        action = agent.act(run.obs, "warmup" if warm else "sample", run.act_generator)
        if cfg.overlap_env and not warm:
            # The env steps on its worker thread while this step's update runs here, so the update
            # samples the replay without transition t (added below): a one-transition lag.
            pending = run.env.step_async(action)
            learn()
            obs, reward, terminated, truncated, _ = pending.result()
        else:
            obs, reward, terminated, truncated, _ = run.env.step(action)
        run.obs, frame = _policy_input(run, obs)
        replay.add_step(action, float(reward), frame, bool(terminated), bool(truncated))
        episode_return += float(reward)
        if terminated or truncated:
            run.obs, run.episodes = None, run.episodes + 1
            returns.append(episode_return)
        run.step += 1
        if not warm and not cfg.overlap_env:
            learn()
        if run.step % cfg.log_every == 0 or run.step == cfg.steps:
            now = time.perf_counter()
            metrics = run.step_fn.read() if run._step is not None else {}
            if returns:
                metrics["rl/episode_return"] = float(np.mean(returns))
            metrics.update({"perf/steps_per_s": (run.step - tick_step) / max(now - tick, 1e-9),
                            "perf/env_steps": float(run.step * repeat), "rl/episodes": float(run.episodes),
                            "rl/updates": float(agent.updates)})
            report(run.step, metrics)
            returns.clear()
            tick, tick_step = now, run.step
        if on_step is not None:
            on_step(run)
    if run.evaluated_at != run.step:
        evaluate_now(run.step)
    return history


def train_sac(cfg: SACLoopConfig, *, on_metrics: MetricsHook | None = None, **build_kwargs: Any
              ) -> tuple[SACRun, list[tuple[int, dict[str, float]]]]:
    """Build a run and train it to the end; returns the run and its metric history."""
    run = build_run(cfg, **build_kwargs)
    return run, train(run, on_metrics=on_metrics)

