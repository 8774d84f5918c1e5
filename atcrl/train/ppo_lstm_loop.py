"""Online recurrent PPO (PPO-LSTM) from pixels on vector envs, optionally with online UL: the paper's DMLab agent.

The loop is PPO's (atcrl.train.ppo_loop) with a recurrent agent: each iteration collects ``horizon`` steps of
``num_envs`` envs, one PPO-LSTM update (epochs x minibatches of whole env sequences), then the iteration's UL
updates (``OnlineUL``, the same schedule, replays and variants as PPO's loop):
  RL only   mode=end_to_end, ul=none       ATC only  mode=decoupled, ul=atc (the defaults)
  RL+ATC    mode=end_to_end, ul=atc        frozen    mode=frozen, encoder_path=<exported encoder>, ul=none

The LSTM state, the previous action and the previous reward of every env are carried from step to step and
from one rollout to the next; an episode start zeroes them (``RecurrentActorCritic.core``), while acting and
when the update recomputes the rollout. Each rollout keeps the state its envs began it with, so the update
recomputes every sequence from where acting started it.

With ``ul_prioritized`` UL anchors are drawn with probability proportional to a priority per stored step
(see the field). A resumed run, like PPO's, starts fresh episodes (so zero LSTM states) and an empty UL replay
unless saved; weights, optimizers, counters and the UL state are restored.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch

from atcrl.data.replay import Replay
from atcrl.fastpath import prepare_module
from atcrl.rl.ppo_lstm import LSTMState, PPOLSTMAgent, PPOLSTMConfig, RecurrentActorCritic, RecurrentRollout
from atcrl.train.ppo_loop import (
    MetricsHook,
    PPOLoopConfig,
    PPORun,
    build_env_and_encoder,
    build_online_ul,
    end_iteration,
    run_iterations,
    seeded,
    store_first,
    store_step,
)
from atcrl.ul.atc import ATC_PRESETS, ATCConfig

ONLINE_ATC = replace(ATC_PRESETS["dmlab"], shift_prob=1.0)
"""Online ATC for DMLab: the offline DMLab settings (Δt 3, 32 sequences x 16 steps, latent 256) with shift probability 1."""


@dataclass(frozen=True)
class PPOLSTMLoopConfig(PPOLoopConfig):
    """One online PPO-LSTM run; defaults are the paper's DMLab settings ("ATC only": decoupled + ATC)."""

    env: str = "miniworld:FourRooms"
    """Environment spec for make_vec_env (discrete actions)."""
    encoder: str = "dmlab"
    """Conv architecture for a fresh encoder ("dmlab", "atari", "dmc")."""
    image_size: int | None = None
    """Square frame side in pixels; None = the env family's own frame (72x96 for the DMLab-shaped `miniworld:` and
    `dmlab:` families, 84x84 for the others)."""
    frame_stack: int = 1
    """Stacked frames per observation (the LSTM is the memory: 1); 0 = the family's default."""
    atc: ATCConfig = ONLINE_ATC
    """Config of the ATC family (atc, ac, ats); other objectives use their registry defaults."""
    ul_updates: int = 2
    """UL updates per iteration (see ul_schedule)."""
    ul_schedule: Literal["quadratic", "linear", "constant", "front"] = "constant"
    """How UL updates per iteration change over training ("constant": ul_updates every iteration)."""
    ul_start_steps: int = 20_000
    """Agent steps collected before UL updates begin."""
    ul_lr_schedule: Literal["cosine", "constant"] = "constant"
    """UL learning-rate schedule over all UL updates of the run."""
    ul_prioritized: bool = False
    """Draw UL anchors with probability proportional to a per-step priority instead of uniformly (the
    reference's choice on exploration levels): the |advantage| of the step from the RL update that used it,
    floored at ul_priority_floor times the largest so far; a step not yet used by RL (random acting, the
    rollout's last frame) gets the largest priority so far, an episode's final frame 1. The priorities are not
    checkpointed: a resumed run starts them again at 1. Off by default."""
    ul_priority_floor: float = 0.01
    """Smallest priority as a fraction of the largest so far, with ul_prioritized (keeps every step drawable)."""
    ppo: PPOLSTMConfig = field(default_factory=PPOLSTMConfig)
    """Agent hyperparameters."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.overlap_ul:
            raise ValueError("overlap_ul is not available for ppo_lstm: set it False (UL runs after each update)")
        if not 1 <= self.ppo.minibatches <= self.num_envs:
            raise ValueError(f"ppo_lstm minibatches are sets of whole env sequences: minibatches must be in "
                             f"[1, num_envs={self.num_envs}], got {self.ppo.minibatches}")
        if self.ul_prioritized and self.ul == "none":
            raise ValueError("ul_prioritized draws UL samples: set ul (e.g. atc) or ul_prioritized False")
        if not 0 < self.ul_priority_floor <= 1:
            raise ValueError(f"ul_priority_floor must be in (0, 1], got {self.ul_priority_floor}")


class ULPriorities:
    """Per-slot priorities of the UL replays (one array per env replay) for ``ul_prioritized``.

    ``written`` records, step by step, the replay slot holding each env's current observation, so that after
    the RL update the rollout's |advantages| land on the slots of the observations they belong to."""

    def __init__(self, replays: list[Replay], floor: float):
        self.replays = replays
        self.floor = floor
        self.values = [np.ones(r.capacity, np.float64) for r in replays]
        """Per replay, [capacity] weights by slot (the arrays ``OnlineUL.priorities`` reads); a frame no step
        acts on (an episode's final frame) keeps 1."""
        self.largest = 1.0
        self.obs_slots = np.zeros((0, len(replays)), np.int64)
        """[T, N] slot of each rollout step's observation, filled by ``record``."""

    def record_newest(self) -> np.ndarray:
        """[N] slot of the newest frame of every replay, given the largest priority (until RL scores it)."""
        slots = np.array([r.newest_slot for r in self.replays])
        for values, s in zip(self.values, slots):
            values[s] = self.largest
        return slots

    def score(self, advantages: np.ndarray) -> None:
        """Set the priorities of the rollout's observations (``obs_slots``) to their |advantage| [T, N]."""
        p = np.abs(advantages)
        self.largest = max(self.largest, float(p.max(initial=0.0)))
        p = np.maximum(p, self.floor * self.largest)
        for i, values in enumerate(self.values):
            values[self.obs_slots[:, i]] = p[:, i]


@dataclass
class PPOLSTMRun(PPORun):
    """A PPO run (``PPORun``: counters, state_dict / load_state_dict) with a recurrent agent and what it carries
    from step to step (its ``agent`` is a PPOLSTMAgent); a restored run restarts its episodes, and with them
    zero LSTM states."""

    priorities: ULPriorities | None = None
    """With cfg.ul_prioritized: the UL replays' sampling priorities."""
    state: LSTMState | None = None
    """[num_envs, lstm] LSTM (h, c) before the current observations."""
    prev_actions: torch.Tensor | None = None
    """[num_envs] action before the current observations."""
    prev_rewards: torch.Tensor | None = None
    """[num_envs] learning reward before the current observations."""
    starts: torch.Tensor | None = None
    """[num_envs] bool: the current observation begins an episode."""


def build_run(cfg: PPOLSTMLoopConfig, *, encoder: Any = None) -> PPOLSTMRun:
    """Vector env, conv (given, loaded from cfg.encoder_path, or fresh), recurrent agent and online UL."""
    process, device, env, meta, encoder = build_env_and_encoder(cfg, encoder)
    obs_shape = tuple(env.single_observation_space.shape)
    net = RecurrentActorCritic(encoder, int(env.single_action_space.n), cfg.ppo.hidden, cfg.ppo.lstm)
    agent = PPOLSTMAgent(net, cfg.mode, cfg.ppo, device, fast=cfg.fast, clip_rewards=cfg.clip_rewards)
    ul = build_online_ul(cfg, agent.net.encoder, net.n_actions, (meta.frame_channels, *obs_shape[1:]),
                         meta.frame_stack, device)
    prepare_module(agent.net, cfg.fast)
    if ul is not None:
        prepare_module(ul.objective, cfg.fast)
    priorities = None
    if ul is not None and cfg.ul_prioritized:
        priorities = ULPriorities(ul.replays, cfg.ul_priority_floor)
        ul.priorities = priorities.values
    return PPOLSTMRun(cfg, env, agent, ul, device, meta.frame_channels, meta.action_repeat, process=process,
                      priorities=priorities)


def _start_episodes(run: PPOLSTMRun) -> None:
    """Reset every env with a seed of this iteration, with zero LSTM states."""
    cfg, N = run.cfg, run.cfg.num_envs
    run.obs, _ = run.env.reset(seed=cfg.seed + 7919 * run.iteration)
    run.episode_return, run.episode_length = np.zeros(N), np.zeros(N, np.int64)
    run.state = run.agent.initial_state(N)
    run.prev_actions = torch.zeros(N, dtype=torch.int64, device=run.device)
    run.prev_rewards = torch.zeros(N, device=run.device)
    run.starts = torch.ones(N, dtype=torch.bool, device=run.device)
    if run.ul is not None:
        store_first(run.ul.replays, run.obs, run.frame_channels)


def collect(run: PPOLSTMRun, rollout: RecurrentRollout | None) -> list[tuple[float, int]]:
    """Step the envs ``horizon`` times carrying each env's LSTM state; fill ``rollout`` (None = act uniformly,
    store nothing for RL) and the UL replay. Returns the (raw score, length) of every episode that ended."""
    cfg, agent, env, N = run.cfg, run.agent, run.env, run.cfg.num_envs
    if run.obs is None:
        _start_episodes(run)
    ul_writes = run.ul.replays if run.ul is not None else None
    act_gen = seeded(cfg.seed, run.iteration, 0, run.device)
    if rollout is not None:
        rollout.h0.copy_(run.state[0]), rollout.c0.copy_(run.state[1])
    if run.priorities is not None:
        run.priorities.obs_slots = np.zeros((cfg.horizon, N), np.int64)
    steps = rollout.steps if rollout is not None else None
    finished: list[tuple[float, int]] = []
    for t in range(cfg.horizon):
        if run.priorities is not None:
            run.priorities.obs_slots[t] = run.priorities.record_newest()
        if rollout is None:
            actions = torch.randint(agent.net.n_actions, (N,), generator=act_gen, device=run.device)
        else:
            out = agent.act(run.obs, run.prev_actions, run.prev_rewards, run.starts, run.state, generator=act_gen)
            actions = out.action
            steps.inputs[t], steps.actions[t], steps.logp[t], steps.values[t] = (out.policy_input, actions,
                                                                                  out.logp, out.value)
            rollout.prev_actions[t], rollout.prev_rewards[t], rollout.starts[t] = (run.prev_actions,
                                                                                   run.prev_rewards, run.starts)
            run.state = out.state
        actions_np = actions.cpu().numpy()
        next_obs, reward, terminated, truncated, info = env.step(actions_np)
        done = terminated | truncated
        final_obs = info.get("final_obs") if done.any() else None
        learn = torch.as_tensor(np.sign(reward) if cfg.clip_rewards else reward, dtype=torch.float32,
                                device=run.device)
        if steps is not None:
            steps.rewards[t] = learn
            steps.terminated[t], steps.truncated[t] = torch.as_tensor(terminated), torch.as_tensor(truncated)
            steps.final_values[t] = 0.0
            cut = np.flatnonzero(truncated & ~terminated)
            if cut.size:  # bootstrap a time-limit cut from the final observation, one more LSTM step on
                c = torch.as_tensor(cut, device=run.device)
                steps.final_values[t, c] = agent.value(np.stack([final_obs[i] for i in cut]), actions[c], learn[c],
                                                       torch.zeros(len(cut), dtype=torch.bool, device=run.device),
                                                       (run.state[0][c], run.state[1][c]))
        if ul_writes is not None:
            store_step(ul_writes, run.frame_channels, actions_np, reward, next_obs, terminated, truncated, final_obs)
        run.episode_return += reward
        run.episode_length += 1
        for i in np.flatnonzero(done):
            finished.append((float(run.episode_return[i]), int(run.episode_length[i])))
            run.episode_return[i], run.episode_length[i] = 0.0, 0
        run.obs, run.prev_actions, run.prev_rewards = next_obs, actions, learn
        run.starts = torch.as_tensor(done, device=run.device)
    if steps is not None:
        steps.last_values = agent.value(run.obs, run.prev_actions, run.prev_rewards, run.starts, run.state)
    if run.priorities is not None:
        run.priorities.record_newest()  # the frame after the rollout: the largest priority until it is scored
    run.episodes += len(finished)
    return finished


def iterate(run: PPOLSTMRun, rollout: RecurrentRollout) -> tuple[dict[str, float], list[tuple[float, int]]]:
    """One iteration: collect, PPO-LSTM update (once RL has started), UL updates (once UL has started)."""
    cfg, itr = run.cfg, run.iteration
    rl_on = itr >= cfg.start_iterations()[1]
    n_ul = cfg.ul_updates_at(itr) if run.ul is not None else 0
    t0 = time.perf_counter()
    finished = collect(run, rollout if rl_on else None)
    t1 = time.perf_counter()
    metrics: dict[str, float] = {}
    if rl_on:
        metrics = run.agent.update(rollout, progress=itr / cfg.iterations, generator=seeded(cfg.seed, itr, 1),
                                 step=run.step_fn)
        if run.priorities is not None:
            advantages, _ = rollout.steps.advantages(cfg.ppo.gamma, cfg.ppo.gae_lambda)
            run.priorities.score(advantages.cpu().numpy())
    t2 = time.perf_counter()
    if n_ul:
        metrics.update(run.ul.update(np.random.default_rng([cfg.seed, itr, 2]), n_ul))
    t3 = time.perf_counter()
    return end_iteration(run, metrics, n_ul, t3 - t0, collect_s=t1 - t0, rl_s=t2 - t1, ul_s=t3 - t2), finished


def train(run: PPOLSTMRun, *, on_metrics: MetricsHook | None = None,
          on_iteration: Any = None) -> list[tuple[int, dict[str, float]]]:
    """Run from ``run.iteration`` to the end; reports as ``ppo_loop.train``. Returns every (step, metrics)."""
    cfg = run.cfg
    shape, dtype = run.agent.policy_input_spec()
    rollout = RecurrentRollout.empty(cfg.horizon, cfg.num_envs, shape, dtype, cfg.ppo.lstm, run.device)
    return run_iterations(run, lambda: iterate(run, rollout), on_metrics=on_metrics, on_iteration=on_iteration)
