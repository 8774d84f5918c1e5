"""The agent families `atcrl train` knows, one object each, and the registry every command dispatches on.

An ``Algorithm`` is what the CLI, the session, checkpoints, evaluation, collection and export need to know
about one agent family: its loop config class and presets, how to build and train a run, the run's
replays and envs, where the conv lies in the agent's state and which counter counts its updates, and how
the agent acts. Nothing outside this module asks which agent a run uses.

Adding an agent (PPO-LSTM, say): write its loop module (config, ``build_run``, ``train``), an
``Algorithm`` for it here or beside its loop, and one line in ``ALGORITHMS``. Its presets are its own
``presets`` (SAC and PPO take theirs from atcrl.presets.RL_PRESETS by name), and `atcrl train` gains a
``--<name>.*`` group for its loop config (``overrides``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from atcrl.data.replay import Replay
from atcrl.fastpath import prepare_module
from atcrl.nets.encoders import ConvEncoder
from atcrl.presets import RL_PRESETS, RLPreset
from atcrl.rl.dqn import DQNAgent
from atcrl.rl.modes import EncoderMode
from atcrl.rl.ppo import ActorCritic, PPOAgent
from atcrl.rl.ppo_lstm import PPOLSTMAgent, RecurrentActorCritic
from atcrl.rl.sac import SACAgent
from atcrl.train import dqn_loop, ppo_loop, ppo_lstm_loop, sac_loop
from atcrl.train.overrides import overrides_of

Actor = Callable[[np.ndarray], Any]
"""Stacked uint8 observation [k * C, H, W] -> action (an int for discrete envs, a float array otherwise).
An actor that remembers earlier steps of the episode (a recurrent agent's) is also an ``EpisodicActor``."""


@runtime_checkable
class EpisodicActor(Protocol):
    """An actor with memory within an episode: whoever plays it calls ``reset`` at every episode start."""

    def __call__(self, obs: np.ndarray) -> Any: ...

    def reset(self) -> None:
        """A new episode begins: forget the previous one (a recurrent agent zeroes its state)."""

    def rewarded(self, reward: float) -> None:
        """The reward the last action earned (a recurrent agent reads it at the next step)."""


def start_episode(act: Any) -> None:
    """Tell an actor (an ``Actor``, or anything wrapping one the same way) that an episode begins."""
    if isinstance(act, EpisodicActor):
        act.reset()


def after_step(act: Any, reward: float) -> None:
    """Tell an actor the reward its last action earned."""
    if isinstance(act, EpisodicActor):
        act.rewarded(reward)

TRAIN_OWNS = ("env", "steps", "seed", "device", "encoder_path", "eval_every", "eval_episodes")
"""Loop-config fields `atcrl train` sets with its own flags (one for every agent), so no ``--<agent>.*``
flag repeats them. Every loop config has env, steps, seed, device, encoder_path, image_size, frame_stack
and fast; eval_every and eval_episodes only where the loop evaluates itself."""


class TrainHooks(Protocol):
    """What the session offers a loop while it trains (``Algorithm.train`` calls these)."""

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """Record metrics reported at agent step ``step``."""

    def evaluate(self, step: int, final: bool) -> None:
        """Evaluate here when due, for loops that do not evaluate themselves (``final``: the last step)."""

    def video(self, step: int) -> None:
        """Record an evaluation video when due."""

    def safe_point(self, step: int) -> None:
        """Between agent steps, with the run consistent: checkpoint when due, and stop here when asked
        (Ctrl-C, --stop-after) by raising."""


class Algorithm(Protocol):
    """One agent family, as every command sees it."""

    name: str
    """Registry key, config.json's "algo" and the CLI group (``--sac.*``)."""
    discrete: bool
    """Whether it acts in discrete action spaces (else continuous ones)."""
    config_cls: type
    """Its loop config (a frozen dataclass; resumable fields marked with atcrl.resumable)."""
    agent_cls: type
    """Its agent: an ``nn.Module`` whose state is {"modules": weights, optimizers, counters}."""
    presets: Mapping[str, RLPreset]
    """The presets that train it."""
    loop_evaluates: bool
    """The loop evaluates itself (config eval_every / eval_episodes); else the session does."""
    encoder_key: str
    """Prefix of the conv's weights in the agent's ``state_dict()["modules"]``."""
    updates_key: str
    """The agent-state counter of gradient updates."""
    changeable: tuple[str, ...]
    """Settings ``--allow-change`` may change on resume, as CLI paths inside the group (``agent.q_lr``): the
    optimiser settings the restored run then uses (see ``after_restore``)."""
    lr_fields: tuple[str, ...]
    """The learning rates among them, which the advice after a divergence halves."""

    @property
    def overrides(self) -> type | None:
        """The ``--<name>.*`` flags: an ``overrides_of(config_cls)`` class, or None for no flags."""

    def total_steps(self, loop: Any) -> int:
        """Agent steps the run takes in all."""

    def warmup_steps(self, loop: Any) -> int:
        """Agent steps at the start that act without updating (far cheaper than the rest: the ETA leaves them out)."""

    def build_run(self, loop: Any, *, encoder: ConvEncoder | None = None) -> Any:
        """A fresh run (envs, agent, replays) with ``step``, ``cfg``, ``agent``, ``env``, ``process`` and
        ``state_dict`` / ``load_state_dict``."""

    def after_restore(self, run: Any) -> None:
        """Re-apply the config's optimiser settings over those the checkpoint's optimizer state brought back."""

    def check_finite(self, run: Any) -> None:
        """Raise FloatingPointError for a NaN/inf the loop has not read back yet (called before a checkpoint)."""

    def train(self, run: Any, hooks: TrainHooks) -> None:
        """Train the run to its end, calling ``hooks`` (metrics, evaluation, videos, safe points)."""

    def replays(self, run: Any) -> list[Replay]:
        """The run's replays (checkpointed on request)."""

    def envs(self, run: Any) -> dict[str, Any]:
        """Envs whose reset RNGs a checkpoint keeps, by name."""

    def close(self, run: Any) -> None:
        """Release what the run holds (envs, worker threads)."""

    def shapes(self, run: Any) -> tuple[ConvEncoder, tuple[int, ...], int]:
        """(the agent's conv, the stacked observation shape, the action count or size)."""

    def build_agent(self, loop: Any, encoder: ConvEncoder, action_dim: int, device: torch.device | str) -> nn.Module:
        """A fresh agent of the run's architecture, on the run's fast path, ready for ``load_state_dict``."""

    def actor(self, agent: Any, *, explore: bool, generator: torch.Generator | None) -> Actor:
        """obs -> action: deterministic, or (``explore``) sampled from the policy."""

    def conv_trained_by_ul(self, loop: Mapping[str, Any]) -> bool:
        """Whether a UL objective trained the conv of a run with this (plain) loop config."""


def presets_of(name: str) -> dict[str, RLPreset]:
    """The presets of atcrl.presets that train agent ``name``."""
    return {k: p for k, p in RL_PRESETS.items() if p.algo == name}


def cli_overrides(algo: Algorithm, example_preset: str, agent_field: str | None = None) -> type:
    """The ``--<name>.*`` flags of a loop config, with ``example_preset``'s values shown in --help.

    agent_field: the loop-config field of the agent's hyperparameters (None: the algorithm's name)."""
    p = algo.presets[example_preset]
    example = p.config(p.env)
    # The agent's own hyperparameter block is called ``agent`` on the command line (--sac.agent.q-lr).
    return overrides_of(algo.config_cls, exclude=TRAIN_OWNS, rename={agent_field or algo.name: "agent"},
                        example=example, example_name=example_preset)


class _Registered:
    """What SAC and PPO set up alike: their presets (atcrl.presets) and their ``--<name>.*`` flags."""

    name: ClassVar[str]
    example_preset: ClassVar[str]
    """The preset whose values the flags' --help shows."""
    agent_field: ClassVar[str | None] = None
    """The loop-config field of the agent's hyperparameters (None: the name)."""

    def __init__(self) -> None:
        self.presets = presets_of(self.name)
        self.overrides = cli_overrides(self, self.example_preset, self.agent_field)


class SAC(_Registered):
    """Soft actor-critic for continuous actions (atcrl.train.sac_loop)."""

    name, example_preset, discrete, loop_evaluates = "sac", "dmc-atc", False, True
    config_cls, agent_cls, encoder_key, updates_key = sac_loop.SACLoopConfig, SACAgent, "encoder.", "updates"
    # The agent reads its grad_clip and the UL its clip from the config each update; the Adam learning rates
    # live in the optimizer state and are set again by after_restore.
    changeable = ("agent.q_lr", "agent.pi_lr", "agent.alpha_lr", "agent.grad_clip", "ul_grad_clip")
    lr_fields = ("agent.q_lr", "agent.pi_lr")

    def total_steps(self, loop: Any) -> int:
        return loop.steps

    def warmup_steps(self, loop: Any) -> int:
        return loop.warmup_steps

    def build_run(self, loop: Any, *, encoder: ConvEncoder | None = None) -> Any:
        return sac_loop.build_run(loop, encoder=encoder)

    def after_restore(self, run: Any) -> None:
        agent, cfg = run.agent, run.cfg.sac
        for opt, lr in ((agent.critic_opt, cfg.q_lr), (agent.actor_opt, cfg.pi_lr), (agent.alpha_opt, cfg.alpha_lr)):
            for group in opt.param_groups:  # a captured step reads a device-tensor rate: write into it
                group["lr"] = group["lr"].fill_(lr) if torch.is_tensor(group["lr"]) else lr

    def check_finite(self, run: Any) -> None:
        if run._step is not None:  # captured updates report a NaN only when asked
            run._step.check_finite()

    def train(self, run: Any, hooks: TrainHooks) -> None:
        every, total = run.cfg.eval_every, run.cfg.steps

        def evaluates_after(step: int) -> bool:
            """The loop evaluates right after this step: its safe point waits for after the evaluation, so
            that the checkpoint records the evaluation as done and a resumed run does not repeat it."""
            return step >= total or bool(every and step % every == 0)

        def on_step(r: Any) -> None:
            if not evaluates_after(r.step):
                hooks.safe_point(r.step)

        def after_evaluation(r: Any) -> None:
            hooks.video(r.step)
            hooks.safe_point(r.step)

        sac_loop.train(run, on_metrics=hooks.on_metrics, on_checkpoint=after_evaluation, on_step=on_step)

    def replays(self, run: Any) -> list[Replay]:
        return [run.replay]

    def envs(self, run: Any) -> dict[str, Any]:
        return {"train": run.env, "eval": run.eval_env}

    def close(self, run: Any) -> None:
        run.close()  # its envs; with --sac.overlap-env also the train env's worker thread

    def shapes(self, run: Any) -> tuple[ConvEncoder, tuple[int, ...], int]:
        return run.agent.encoder, tuple(run.env.observation_space.shape), int(np.prod(run.env.action_space.shape))

    def build_agent(self, loop: Any, encoder: ConvEncoder, action_dim: int, device: torch.device | str) -> nn.Module:
        latent = loop.mode is EncoderMode.frozen and loop.latent_replay
        agent = SACAgent(encoder, action_dim, loop.mode, loop.sac, latent_obs=latent, latent_dtype=loop.latent_dtype,
                         device=device, fast=loop.fast)
        return prepare_module(agent, loop.fast)

    def actor(self, agent: Any, *, explore: bool, generator: torch.Generator | None) -> Actor:
        def act(obs: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(np.ascontiguousarray(obs))
            if agent.latent_obs:  # the frozen conv's output is what this agent acts on
                x = agent.latent(x[None])[0]
            return agent.act(x, "sample" if explore else "deterministic", generator)
        return act

    def conv_trained_by_ul(self, loop: Mapping[str, Any]) -> bool:
        return loop["mode"] == EncoderMode.decoupled.value


class _VectorDiscrete(_Registered):
    """What PPO and DQN share: discrete actions from vector envs whose agent keeps its conv at ``net.encoder``, a
    conv trained by UL when decoupled or with an online objective, and no env state in checkpoints."""

    discrete, loop_evaluates = True, False

    def envs(self, run: Any) -> dict[str, Any]:
        return {}  # a resumed run starts fresh episodes from seeds of its iteration (PPO) or step (DQN)

    def shapes(self, run: Any) -> tuple[ConvEncoder, tuple[int, ...], int]:
        return run.agent.net.encoder, tuple(run.env.single_observation_space.shape), run.agent.net.n_actions

    def conv_trained_by_ul(self, loop: Mapping[str, Any]) -> bool:
        return loop["mode"] == EncoderMode.decoupled.value or loop.get("ul", "none") != "none"


class PPO(_VectorDiscrete):
    """PPO for discrete actions on vector envs, optionally with online UL (atcrl.train.ppo_loop)."""

    name, example_preset = "ppo", "atari-ppo-atc"
    config_cls, agent_cls, encoder_key, updates_key = ppo_loop.PPOLoopConfig, PPOAgent, "net.encoder.", "gradient_steps"
    loop_module: ClassVar[Any] = ppo_loop
    """The loop module (``build_run``, ``train``)."""
    # PPOAgent.update reads all of these from its config (the learning rate is set on every update).
    changeable = ("agent.lr", "agent.grad_clip", "agent.value_coef", "agent.entropy_coef", "ul_grad_clip")
    lr_fields = ("agent.lr",)

    def total_steps(self, loop: Any) -> int:
        return loop.iterations * loop.batch_steps

    def warmup_steps(self, loop: Any) -> int:
        # With UL the agent acts at random, updating nothing, until UL (or RL) starts.
        return min(loop.ul_start_steps, loop.rl_start_steps) if loop.ul != "none" else 0

    def build_run(self, loop: Any, *, encoder: ConvEncoder | None = None) -> Any:
        return self.loop_module.build_run(loop, encoder=encoder)

    def after_restore(self, run: Any) -> None:
        pass  # nothing to do: see ``changeable``

    def check_finite(self, run: Any) -> None:
        pass  # every PPO loss is checked as it is computed

    def train(self, run: Any, hooks: TrainHooks) -> None:
        def on_iteration(r: Any) -> None:
            hooks.evaluate(r.step, r.iteration >= r.cfg.iterations)
            hooks.video(r.step)
            hooks.safe_point(r.step)

        self.loop_module.train(run, on_metrics=hooks.on_metrics, on_iteration=on_iteration)

    def replays(self, run: Any) -> list[Replay]:
        return list(run.ul.replays) if run.ul is not None else []

    def close(self, run: Any) -> None:
        run.stop_ul_thread()

    def build_agent(self, loop: Any, encoder: ConvEncoder, action_dim: int, device: torch.device | str) -> nn.Module:
        agent = PPOAgent(ActorCritic(encoder, action_dim, loop.ppo.hidden), loop.mode, loop.ppo, device, fast=loop.fast)
        prepare_module(agent.net, loop.fast)
        return agent

    def actor(self, agent: Any, *, explore: bool, generator: torch.Generator | None) -> Actor:
        def act(obs: np.ndarray) -> int:
            out = agent.act(torch.from_numpy(np.ascontiguousarray(obs))[None], greedy=not explore, generator=generator)
            return int(out.action[0])
        return act



class PPOLSTM(PPO):
    """Recurrent PPO (conv, fc, LSTM) for discrete actions, optionally with online UL (atcrl.train.ppo_lstm_loop).

    Everything about a run is PPO's (same loop shape, counters, UL and changeable settings) except the agent,
    its loop and its actor, which carries the LSTM state from step to step of an episode."""

    name, example_preset, agent_field = "ppo_lstm", "dmlab-ppo-atc", "ppo"
    config_cls, agent_cls, loop_module = ppo_lstm_loop.PPOLSTMLoopConfig, PPOLSTMAgent, ppo_lstm_loop

    def build_agent(self, loop: Any, encoder: ConvEncoder, action_dim: int, device: torch.device | str) -> nn.Module:
        net = RecurrentActorCritic(encoder, action_dim, loop.ppo.hidden, loop.ppo.lstm)
        agent = PPOLSTMAgent(net, loop.mode, loop.ppo, device, fast=loop.fast, clip_rewards=loop.clip_rewards)
        prepare_module(agent.net, loop.fast)
        return agent

    def actor(self, agent: Any, *, explore: bool, generator: torch.Generator | None) -> Actor:
        return RecurrentActor(agent, explore=explore, generator=generator)


class RecurrentActor:
    """A PPO-LSTM agent acting in one env (an ``EpisodicActor``): its LSTM state, previous action and reward
    carry from step to step, and ``reset`` begins a new episode."""

    def __init__(self, agent: PPOLSTMAgent, *, explore: bool, generator: torch.Generator | None):
        self.agent, self.explore, self.generator = agent, explore, generator
        self.reset()

    def reset(self) -> None:
        device = self.agent.device
        self.state = self.agent.initial_state(1)
        self.prev_action = torch.zeros(1, dtype=torch.int64, device=device)
        self.prev_reward = torch.zeros(1, device=device)
        self.starts = torch.ones(1, dtype=torch.bool, device=device)

    def rewarded(self, reward: float) -> None:
        self.prev_reward.fill_(self.agent.input_reward(reward))

    def __call__(self, obs: np.ndarray) -> int:
        out = self.agent.act(torch.from_numpy(np.ascontiguousarray(obs))[None], self.prev_action,
                             self.prev_reward, self.starts, self.state,
                             greedy=not self.explore, generator=self.generator)
        self.state, self.prev_action = out.state, out.action
        self.starts = torch.zeros_like(self.starts)
        return int(out.action[0])



class DQN(_VectorDiscrete):
    """Double DQN for discrete actions on vector envs with per-env ε (atcrl.train.dqn_loop): the Atari expert."""

    name, example_preset = "dqn", "atari-dqn"
    config_cls, agent_cls, encoder_key, updates_key = dqn_loop.DQNLoopConfig, DQNAgent, "net.encoder.", "updates"
    # The learning rate lives in the optimizer state (set again by after_restore); the clip is read each update.
    changeable = ("agent.lr", "agent.grad_clip", "ul_grad_clip")
    lr_fields = ("agent.lr",)

    def total_steps(self, loop: Any) -> int:
        return loop.total_steps

    def warmup_steps(self, loop: Any) -> int:
        return min(loop.warmup_steps, loop.total_steps)

    def build_run(self, loop: Any, *, encoder: ConvEncoder | None = None) -> Any:
        return dqn_loop.build_run(loop, encoder=encoder)

    def after_restore(self, run: Any) -> None:
        lr = run.cfg.dqn.lr
        for group in run.agent.optimizer.param_groups:  # a capturable optimizer keeps a device-tensor rate
            group["lr"] = group["lr"].fill_(lr) if torch.is_tensor(group["lr"]) else lr

    def check_finite(self, run: Any) -> None:
        pass  # every DQN loss is checked as it is computed

    def train(self, run: Any, hooks: TrainHooks) -> None:
        def on_step(r: Any) -> None:
            hooks.evaluate(r.step, r.vector_step >= r.cfg.vector_steps)
            hooks.video(r.step)
            hooks.safe_point(r.step)

        dqn_loop.train(run, on_metrics=hooks.on_metrics, on_step=on_step)

    def replays(self, run: Any) -> list[Replay]:
        return list(run.replays)

    def close(self, run: Any) -> None:
        run.close()

    def build_agent(self, loop: Any, encoder: ConvEncoder, action_dim: int, device: torch.device | str) -> nn.Module:
        return dqn_loop.build_agent(loop, encoder, action_dim, device)

    def actor(self, agent: Any, *, explore: bool, generator: torch.Generator | None) -> Actor:
        def act(obs: np.ndarray) -> int:
            x = torch.from_numpy(np.ascontiguousarray(obs))[None]
            if not explore:  # argmax, drawing nothing from any random stream
                return int(agent.greedy(x)[0])
            return int(agent.act(x, agent.cfg.explore_epsilon, generator)[0])
        return act



ALGORITHMS: dict[str, Algorithm] = {"sac": SAC(), "ppo": PPO(), "ppo_lstm": PPOLSTM(), "dqn": DQN()}
"""Every agent family, by name. A new agent is one more line here."""


def algorithm(name: str) -> Algorithm:
    """The agent family ``name``; ValueError listing the known ones."""
    if name not in ALGORITHMS:
        raise ValueError(f"unknown agent {name!r}; this atcrl trains {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name]


def algorithm_of(agent: Any) -> Algorithm:
    """The family of an agent object."""
    for algo in ALGORITHMS.values():
        if isinstance(agent, algo.agent_cls):
            return algo
    raise TypeError(f"{type(agent).__name__} is not the agent of any registered algorithm")


def train_presets() -> dict[str, RLPreset]:
    """Every preset of every registered agent, by name."""
    return {name: p for algo in ALGORITHMS.values() for name, p in algo.presets.items()}
