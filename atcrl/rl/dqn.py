"""Double DQN for discrete actions on a conv encoder: the Q network, the Huber TD loss, the update.

The network is the encoder followed by one MLP (hidden 512) giving a Q-value per action, or, with
``dueling``, a value and an advantage stream combined as V + A - mean(A). Which losses may train the
encoder is decided by the EncoderMode at the one place the TD loss reads features (``rl_features`` in
``QNetwork.q_values``); the optimizer also holds the encoder's weights only in end-to-end mode.

The target network is a gradient-free copy of the whole Q network (conv included) that follows the
online one every ``target_update_every`` updates by ``momentum_update`` at ``target_tau``: 1 copies
the online weights exactly (the classic hard update), below 1 moves it part of the way (EMA).
With ``double`` the online network picks the next action and the target network scores it.

Precision: with a ``FastPathConfig`` the forward passes run under its autocast; Q-values leave the
network as float32, so targets and the loss are float32. Backward and optimizer steps run outside it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from atcrl.data.batches import TransitionBatch
from atcrl.fastpath import FastPathConfig, adam, autocast, clip_gradients
from atcrl.nets.augment import random_shift
from atcrl.nets.encoders import ConvEncoder
from atcrl.nets.mlp import mlp
from atcrl.nets.target import frozen_copy, momentum_update
from atcrl.rl.modes import EncoderMode, rl_features

__all__ = ["DQNAgent", "DQNConfig", "QNetwork", "td_loss"]


@dataclass(frozen=True)
class DQNConfig:
    """DQN hyperparameters; defaults are the Atari double-DQN reference settings (docs/reference-settings.md,
    "DQN expert for Atari")."""

    lr: float = 6.25e-5
    """Adam learning rate."""
    adam_eps: float = 1.5e-4
    """Adam epsilon (the small-batch DQN setting; torch's default 1e-8 is far less stable here)."""
    hidden: int = 512
    """Hidden width of the MLP head on the encoder features."""
    dueling: bool = False
    """Dueling head: separate value and advantage MLPs, Q = V + A - mean(A). Off in the double-DQN reference."""
    double: bool = True
    """Double DQN: the online network picks the next action, the target network scores it (off: the target
    network's own max, plain DQN)."""
    huber_delta: float = 1.0
    """Huber loss threshold: quadratic within +-delta of the target, linear beyond (the TD-error clip)."""
    target_update_every: int = 2000
    """Gradient updates between target-network updates (2000 updates = 8000 agent steps at one update per 4)."""
    target_tau: float = 1.0
    """How far each target update moves the target towards the online network: 1 = an exact copy (hard
    update), below 1 = an exponential moving average (use it with target_update_every=1)."""
    grad_clip: float = 0.0
    """Max global gradient norm (0 = no clipping; the norm is still logged)."""
    shift_pad: int = 0
    """Random-shift augmentation padding of obs and next_obs (0 = off, as in the reference)."""
    explore_epsilon: float = 0.001
    """ε of the agent's exploring policy outside training (``atcrl collect --explore``, evaluation with
    exploration); greedy evaluation uses ε = 0. Training uses the loop's per-env ε."""

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.adam_eps <= 0 or self.huber_delta <= 0:
            raise ValueError(f"lr, adam_eps and huber_delta must be > 0, got {self.lr}, {self.adam_eps}, "
                             f"{self.huber_delta}")
        if self.hidden < 1 or self.target_update_every < 1:
            raise ValueError(f"hidden and target_update_every must be >= 1, got {self.hidden}, "
                             f"{self.target_update_every}")
        if not 0 < self.target_tau <= 1:
            raise ValueError(f"target_tau must be in (0, 1], got {self.target_tau}")
        if self.grad_clip < 0 or self.shift_pad < 0 or not 0 <= self.explore_epsilon <= 1:
            raise ValueError("grad_clip and shift_pad must be >= 0 and explore_epsilon in [0, 1]")


class QNetwork(nn.Module):
    """Encoder -> flattened features -> MLP(hidden) -> n_actions Q-values (or dueling V and A streams)."""

    def __init__(self, encoder: ConvEncoder, n_actions: int, hidden: int = 512, dueling: bool = False):
        super().__init__()
        if n_actions < 1:
            raise ValueError(f"n_actions must be >= 1, got {n_actions}")
        self.encoder, self.n_actions, self.dueling = encoder, n_actions, dueling
        self.head = mlp(encoder.feature_dim, [hidden], n_actions)
        self.value = mlp(encoder.feature_dim, [hidden], 1) if dueling else None

    def q_values(self, obs: torch.Tensor, mode: EncoderMode) -> torch.Tensor:
        """[B, C, H, W] observations -> float32 [B, n_actions]; gradients reach the conv only end-to-end."""
        features = rl_features(self.encoder(obs).flatten(1), mode)
        q = self.head(features)
        if self.value is not None:
            q = self.value(features) + q - q.mean(1, keepdim=True)
        return q.float()


def td_loss(q: torch.Tensor, target: torch.Tensor, delta: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Huber loss of the taken actions' Q-values ``q`` [B] against fixed ``target`` [B]; (loss, metrics)."""
    loss = F.huber_loss(q, target, delta=delta)
    return loss, {"rl/loss": loss.detach(), "rl/q": q.detach().mean(), "rl/q_target": target.mean(),
                  "rl/td_abs": (q.detach() - target).abs().mean()}


def _finite(loss: torch.Tensor, updates: int) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(
            f"DQN loss is {loss.item()} at update {updates}: stopping before it corrupts the weights "
            "(check the learning rate, the rewards and the observations for NaN/inf)")


class DQNAgent(nn.Module):
    """A Q network, its target copy, its mode, the optimizer and the counters needed to resume.

    The same state layout as the other agents: ``state_dict()["modules"]`` holds the weights (the network
    under ``net.``, its target under ``target.``), beside the optimizer state and the counters.
    fast: run forward passes under this fast path's autocast and step with its optimizer kernels.
    """

    def __init__(self, net: QNetwork, mode: EncoderMode | str, cfg: DQNConfig = DQNConfig(),
                 device: torch.device | str = "cpu", fast: FastPathConfig | None = None):
        super().__init__()
        self.mode, self.cfg, self.fast = EncoderMode(mode), cfg, fast
        self.net = net.to(device)
        if self.mode is EncoderMode.frozen:
            self.net.encoder.requires_grad_(False)  # nothing, RL or UL, may change a frozen encoder
        self.target = frozen_copy(self.net)
        self.optimizer = adam(self.rl_parameters(), fast, lr=cfg.lr, eps=cfg.adam_eps)
        self.updates = 0
        """Gradient updates done so far (drives the target-update cadence)."""

    @property
    def device(self) -> torch.device:
        return self.net.head[0].weight.device

    def rl_parameters(self) -> list[nn.Parameter]:
        """What the optimizer owns: the head(s), plus the encoder only when RL trains it."""
        params = [p for name, p in self.net.named_parameters() if not name.startswith("encoder.")]
        if self.mode is EncoderMode.end_to_end:
            params += list(self.net.encoder.parameters())
        return params

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        with contextlib.nullcontext() if self.fast is None else autocast(self.device, self.fast):
            yield

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def greedy(self, obs: torch.Tensor | np.ndarray) -> torch.Tensor:
        """[N, C, H, W] observations -> [N] int64 argmax actions."""
        with self.autocast():
            return self.net.q_values(torch.as_tensor(obs).to(self.device), self.mode).argmax(1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor | np.ndarray, epsilon: torch.Tensor | np.ndarray | float,
            generator: torch.Generator | None = None) -> torch.Tensor:
        """ε-greedy actions [N] int64: observation i acts uniformly at random with probability epsilon[i]
        (one ε for all, or one per observation), greedily otherwise. Draws from ``generator`` (on the agent's
        device) twice per call, whatever ε is, so the random stream does not depend on the values."""
        greedy = self.greedy(obs)
        n = greedy.shape[0]
        eps = torch.as_tensor(epsilon, dtype=torch.float32, device=self.device).expand(n)
        explore = torch.rand(n, generator=generator, device=self.device) < eps
        random = torch.randint(self.net.n_actions, (n,), generator=generator, device=self.device)
        return torch.where(explore, random, greedy)

    # ------------------------------------------------------------------ learning
    def prepare(self, batch: TransitionBatch) -> TransitionBatch:
        """Move a sampled batch to the agent's device (and random-shift it when shift_pad is set)."""
        batch = batch.to(self.device, non_blocking=True)
        if self.cfg.shift_pad:
            batch.obs = random_shift(batch.obs, pad=self.cfg.shift_pad)
            batch.next_obs = random_shift(batch.next_obs, pad=self.cfg.shift_pad)
        return batch

    def loss(self, batch: TransitionBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The (double) DQN Huber loss on a prepared batch: y = reward + discount * Q_target(next, a*), with
        a* the online argmax (double) or the target's own (plain); discount is 0 after a true terminal."""
        with self.autocast():
            q = self.net.q_values(batch.obs, self.mode).gather(1, batch.action.long()[:, None]).squeeze(1)
            with torch.no_grad():
                next_q = self.target.q_values(batch.next_obs, self.mode)
                picker = self.net.q_values(batch.next_obs, self.mode) if self.cfg.double else next_q
                best = next_q.gather(1, picker.argmax(1, keepdim=True)).squeeze(1)
        target = batch.reward + batch.discount * best
        return td_loss(q, target, self.cfg.huber_delta)

    def update(self, batch: TransitionBatch) -> dict[str, float]:
        """One gradient step on a prepared batch (checked for NaN/inf first), then the target update when due."""
        loss, metrics = self.loss(batch)
        _finite(loss, self.updates)
        params = self.rl_parameters()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=params)
        metrics["rl/grad_norm"] = clip_gradients(params, self.cfg.grad_clip)
        self.optimizer.step()
        self.updates += 1
        if self.updates % self.cfg.target_update_every == 0:
            self.update_target()
        return dict(zip(metrics, torch.stack([v.float() for v in metrics.values()]).tolist()))  # one sync

    @torch.no_grad()
    def update_target(self) -> None:
        """target <- (1 - tau) target + tau online (tau = 1: an exact copy)."""
        momentum_update(self.target, self.net, self.cfg.target_tau)

    # ------------------------------------------------------------------ state
    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        """Networks (target included), optimizer and counters: everything needed to resume the agent."""
        return {"modules": super().state_dict(*args, **kwargs), "optimizer": self.optimizer.state_dict(),
                "updates": self.updates, "mode": self.mode.value}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True, assign: bool = False):  # type: ignore[override]
        if not isinstance(state, dict) or "modules" not in state:
            raise ValueError("not a DQNAgent state (expected the dict from DQNAgent.state_dict())")
        if state.get("mode", self.mode.value) != self.mode.value:
            raise ValueError(f"this state was saved by a {state['mode']!r} agent; this agent is {self.mode.value!r}")
        result = super().load_state_dict(state["modules"], strict=strict, assign=assign)
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = int(state["updates"])
        return result
