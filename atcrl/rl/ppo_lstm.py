"""Recurrent PPO (PPO-LSTM) for discrete actions: the paper's DMLab agent.

The network: conv encoder -> fc (256, ReLU) -> LSTM (256) whose input is the fc output concatenated with the
previous action (one-hot) and the previous reward; the fc output skips past the LSTM and is concatenated with
its output; one linear layer on that gives the policy logits and the value.

Episode boundaries: ``starts[t]`` marks the observation at step t as the first of an episode. There the
LSTM state entering the step is zeroed and the previous action and reward read as zero, both while acting and
when the update recomputes a rollout, so no memory crosses an episode end.

Which losses may train the conv is the EncoderMode, as for ``PPOAgent``: the RL loss reads conv features
through ``rl_features`` (detached unless end-to-end), the RL optimizer holds the conv only end-to-end, and a
frozen conv takes no gradient at all. fc, LSTM and heads are always trained by RL.

The update: ``epochs`` passes over the rollout, each split into ``minibatches`` sets of WHOLE env sequences
(all T steps of some envs), each recomputed from the LSTM state that env had when the rollout began.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from atcrl.fastpath import FastPathConfig, autocast
from atcrl.nets.encoders import ConvEncoder
from atcrl.rl.modes import EncoderMode, rl_features
from atcrl.rl.ppo import (
    PPOConfig,
    PPOModule,
    sample_actions,
)
from atcrl.rl.rollout import Rollout

LSTMState = tuple[torch.Tensor, torch.Tensor]
"""(h, c), each [N, lstm]."""


@dataclass(frozen=True)
class PPOLSTMConfig(PPOConfig):
    """PPO-LSTM hyperparameters; defaults are the paper's DMLab settings."""

    epochs: int = 1
    """Passes over each rollout."""
    minibatches: int = 2
    """Minibatches per epoch, each a set of whole env sequences (16 envs / 2 = 8 sequences of 128 steps)."""
    gae_lambda: float = 0.97
    """GAE lambda."""
    value_coef: float = 0.5
    """Weight of the value loss 0.5 * (V - R)^2."""
    grad_clip: float = 100.0
    """Max global gradient norm of the RL parameters (0 disables clipping; the norm is still logged)."""
    hidden: int = 256
    """Width of the fc layer on the conv features (its output feeds the LSTM and skips past it)."""
    lstm: int = 256
    """LSTM hidden size."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lstm < 1:
            raise ValueError(f"lstm must be >= 1, got {self.lstm}")


class RecurrentActorCritic(nn.Module):
    """Conv -> fc -> LSTM(fc, previous action, previous reward) ++ fc -> (logits, value)."""

    def __init__(self, encoder: ConvEncoder, n_actions: int, hidden: int = 256, lstm: int = 256):
        super().__init__()
        if n_actions < 1:
            raise ValueError(f"n_actions must be >= 1, got {n_actions}")
        self.encoder = encoder
        self.n_actions = n_actions
        self.lstm_size = lstm
        self.fc = nn.Linear(encoder.feature_dim, hidden)
        self.lstm = nn.LSTMCell(hidden + n_actions + 1, lstm)
        self.head = nn.Linear(hidden + lstm, n_actions + 1)
        with torch.no_grad():
            self.head.weight[:n_actions].mul_(0.01)  # a near-uniform first policy, as in ActorCritic

    def features(self, obs: torch.Tensor, encoder: ConvEncoder | None = None) -> torch.Tensor:
        """[B, C, H, W] observations -> [B, feature_dim] flattened conv features (``encoder``: read with
        this conv instead of the network's own)."""
        return (self.encoder if encoder is None else encoder)(obs).flatten(1)

    def initial_state(self, n: int, device: torch.device | str) -> LSTMState:
        """The zero LSTM state of ``n`` envs."""
        return (torch.zeros(n, self.lstm_size, device=device), torch.zeros(n, self.lstm_size, device=device))

    def core(self, features: torch.Tensor, prev_actions: torch.Tensor, prev_rewards: torch.Tensor,
             starts: torch.Tensor, state: LSTMState) -> tuple[torch.Tensor, torch.Tensor, LSTMState]:
        """Run T steps of N envs from ``state``.

        features [T, N, feature_dim] float; prev_actions [T, N] int64; prev_rewards [T, N] float; starts [T, N]
        bool (step t begins an episode: the state entering it, the previous action and reward are zeroed).
        Returns (logits [T, N, n_actions], values [T, N], the state after the last step)."""
        x = torch.relu(self.fc(features.float()))
        keep = (~starts).to(x.dtype)[..., None]  # [T, N, 1]
        previous = torch.cat([F.one_hot(prev_actions, self.n_actions).to(x.dtype) * keep,
                              prev_rewards[..., None].to(x.dtype) * keep], dim=-1)
        inputs = torch.cat([x, previous], dim=-1)
        h, c = state
        outputs = []
        for t in range(inputs.shape[0]):
            h, c = self.lstm(inputs[t], (h * keep[t], c * keep[t]))
            outputs.append(h)
        out = self.head(torch.cat([x, torch.stack(outputs)], dim=-1))
        return out[..., : self.n_actions], out[..., self.n_actions], (h, c)


@dataclass
class RecurrentRollout:
    """One iteration's experience for PPO-LSTM: a ``Rollout`` (policy inputs, actions, log-probabilities,
    values, rewards, ends) plus what the LSTM reads beside the observation."""

    steps: Rollout
    prev_actions: torch.Tensor
    """[T, N] int64 action taken before each step (read as zero where ``starts``)."""
    prev_rewards: torch.Tensor
    """[T, N] learning reward received before each step (read as zero where ``starts``)."""
    starts: torch.Tensor
    """[T, N] bool: the step's observation is the first of an episode."""
    h0: torch.Tensor
    """[N, lstm] LSTM h before the first step."""
    c0: torch.Tensor
    """[N, lstm] LSTM c before the first step."""

    @classmethod
    def empty(cls, horizon: int, num_envs: int, input_shape: tuple[int, ...], input_dtype: torch.dtype,
              lstm: int, device: torch.device | str) -> RecurrentRollout:
        T, N = horizon, num_envs
        return cls(Rollout.empty(T, N, input_shape, input_dtype, device),
                   prev_actions=torch.zeros(T, N, dtype=torch.int64, device=device),
                   prev_rewards=torch.zeros(T, N, device=device), starts=torch.zeros(T, N, dtype=torch.bool,
                                                                                        device=device),
                   h0=torch.zeros(N, lstm, device=device), c0=torch.zeros(N, lstm, device=device))

    def env_minibatches(self, n_minibatches: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """One epoch's minibatches: the envs shuffled and split into ``n_minibatches`` near-equal sets."""
        n = self.steps.num_envs
        if not 1 <= n_minibatches <= n:
            raise ValueError(f"minibatches must be in [1, {n}] (whole sequences of {n} envs), got {n_minibatches}")
        order = torch.randperm(n, generator=generator).to(self.steps.actions.device)
        return list(torch.tensor_split(order, n_minibatches))


@dataclass
class RecurrentAct:
    """What ``PPOLSTMAgent.act`` returns for one step of N envs."""

    action: torch.Tensor
    """[N] int64."""
    logp: torch.Tensor
    """[N] log-probability of the action."""
    value: torch.Tensor
    """[N] value estimate."""
    policy_input: torch.Tensor
    """What the rollout stores: the observation, or its detached conv features (see ``caches_features``)."""
    state: LSTMState
    """The LSTM state after this step."""


class PPOLSTMAgent(PPOModule):
    """A RecurrentActorCritic, its mode, the RL optimizer and the counters needed to resume (see ``PPOModule``).

    The LSTM and heads run in float32 (only the conv runs under the fast path's autocast). ``clip_rewards``:
    the LSTM reads sign(reward) as the previous reward (as the loop learns from it), else the reward itself.
    """

    def __init__(self, net: RecurrentActorCritic, mode: EncoderMode, cfg: PPOLSTMConfig = PPOLSTMConfig(),
                 device: torch.device | str = "cpu", fast: FastPathConfig | None = None, clip_rewards: bool = False):
        super().__init__(net, mode, cfg, device, fast)
        self.clip_rewards = clip_rewards

    def rl_parameters(self) -> list[nn.Parameter]:
        """What the RL optimizer owns: fc, LSTM and head, plus the conv only when RL trains it."""
        params = [p for m in (self.net.fc, self.net.lstm, self.net.head) for p in m.parameters()]
        if self.mode is EncoderMode.end_to_end:
            params += list(self.net.encoder.parameters())
        return params

    def input_reward(self, reward: float) -> float:
        """The previous-reward input for an env reward (its sign with ``clip_rewards``)."""
        return float(np.sign(reward)) if self.clip_rewards else float(reward)

    def initial_state(self, n: int) -> LSTMState:
        return self.net.initial_state(n, self.device)

    @torch.no_grad()
    def act(self, obs: torch.Tensor | np.ndarray, prev_actions: torch.Tensor, prev_rewards: torch.Tensor,
            starts: torch.Tensor, state: LSTMState, *, greedy: bool = False,
            generator: torch.Generator | None = None) -> RecurrentAct:
        """One step of N envs: sample (or, ``greedy``, take the most likely) actions. prev_actions [N] int64,
        prev_rewards [N], starts [N] bool (this observation begins an episode), state the LSTM state before."""
        obs = torch.as_tensor(obs).to(self.device, non_blocking=True)
        features = self.net.features(obs)
        logits, value, state = self.net.core(features[None], prev_actions[None], prev_rewards[None], starts[None],
                                             state)
        logits, value = logits[0], value[0]
        action, logp = sample_actions(logits, greedy, generator)
        return RecurrentAct(action, logp, value, features if self.caches_features else obs, state)

    @torch.no_grad()
    def value(self, obs: torch.Tensor | np.ndarray, prev_actions: torch.Tensor, prev_rewards: torch.Tensor,
              starts: torch.Tensor, state: LSTMState) -> torch.Tensor:
        """[N] value estimates of one step (arguments as ``act``)."""
        features = self.net.features(torch.as_tensor(obs).to(self.device, non_blocking=True))
        return self.net.core(features[None], prev_actions[None], prev_rewards[None], starts[None], state)[1][0]

    def sequences(self, rollout: RecurrentRollout, envs: torch.Tensor) -> dict[str, torch.Tensor]:
        """What ``heads`` recomputes the policy of the rollout's sequences of ``envs`` from: their stored inputs
        [T, B, ...], previous actions and rewards, episode starts [T, B] and initial LSTM states."""
        return {"inputs": rollout.steps.inputs[:, envs], "prev_actions": rollout.prev_actions[:, envs],
                "prev_rewards": rollout.prev_rewards[:, envs], "starts": rollout.starts[:, envs],
                "h0": rollout.h0[envs], "c0": rollout.c0[envs]}

    def evaluate(self, rollout: RecurrentRollout, envs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Recompute (logits [T, B, A], values [T, B]) of the rollout's sequences of ``envs`` from their initial
        LSTM states, with the mode's gradient split applied to the conv features."""
        return self._sequence_heads(self.sequences(rollout, envs))

    def _sequence_heads(self, seq: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = seq["inputs"]
        T, B = inputs.shape[:2]
        with contextlib.nullcontext() if self.fast is None else autocast(self.device, self.fast):
            features = inputs if self.caches_features else self.net.features(inputs.flatten(0, 1)).view(T, B, -1)
        features = rl_features(features, self.mode)
        logits, values, _ = self.net.core(features, seq["prev_actions"], seq["prev_rewards"], seq["starts"],
                                          (seq["h0"], seq["c0"]))
        return logits, values

    def steps(self, rollout: RecurrentRollout) -> Rollout:
        return rollout.steps

    def minibatches(self, rollout: RecurrentRollout, advantages: torch.Tensor, returns: torch.Tensor,
                    generator: torch.Generator | None) -> Iterator[dict[str, torch.Tensor]]:
        """One epoch: per minibatch of whole env sequences, their ``sequences`` and what the loss reads, flat."""
        steps = rollout.steps
        for envs in rollout.env_minibatches(self.cfg.minibatches, generator):
            yield {**self.sequences(rollout, envs), "actions": steps.actions[:, envs].flatten(),
                   "logp": steps.logp[:, envs].flatten(), "advantages": advantages[:, envs].flatten(),
                   "returns": returns[:, envs].flatten()}

    def heads(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logits, values = self._sequence_heads(batch)
        return logits.flatten(0, 1), values.flatten()
