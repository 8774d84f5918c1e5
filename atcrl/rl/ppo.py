"""PPO for discrete actions on a conv encoder: the actor-critic network, the clipped loss, the update.

The network is the encoder followed by one MLP (hidden 512) whose outputs are the policy logits
and the value. Which losses may train the encoder is decided by the EncoderMode, at the one
place the RL loss reads features (``rl_features`` in ``PPOAgent._heads``); the RL optimizer
also holds the encoder's weights only in end-to-end mode.

Precision: with a ``FastPathConfig`` the update's forward pass (encoder in end-to-end mode, MLP
head) runs under its autocast; logits and values leave it as float32, so the loss, its
log-probabilities and ratios are float32. Backward and optimizer steps run outside autocast.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from atcrl.fastpath import FastPathConfig, adam, autocast, clip_gradients
from atcrl.nets.encoders import ConvEncoder
from atcrl.nets.mlp import mlp
from atcrl.rl.modes import EncoderMode, rl_features
from atcrl.rl.rollout import Rollout


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters; defaults are the paper's Atari settings."""

    lr: float = 2.5e-4
    """Adam learning rate at the start of training."""
    clip: float = 0.1
    """Ratio clip epsilon at the start of training: the surrogate uses clamp(ratio, 1 - eps, 1 + eps)."""
    anneal: bool = True
    """Anneal lr and the ratio clip linearly to 0 over training (paper: yes)."""
    epochs: int = 4
    """Passes over each rollout."""
    minibatches: int = 4
    """Minibatches per epoch (16 envs x 128 steps / 4 = 512 samples each)."""
    gamma: float = 0.99
    """Discount."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    value_coef: float = 1.0
    """Weight of the value loss 0.5 * (V - R)^2."""
    entropy_coef: float = 0.01
    """Weight of the entropy bonus."""
    grad_clip: float = 10.0
    """Max global gradient norm of the RL parameters (0 disables clipping; the norm is still logged)."""
    hidden: int = 512
    """Hidden width of the MLP head on the encoder features."""
    normalize_advantage: bool = False
    """Standardise advantages per minibatch (the paper's Atari runs did not)."""

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.clip < 0 or self.grad_clip < 0:
            raise ValueError(f"lr must be > 0 and clip, grad_clip >= 0; got {self.lr}, {self.clip}, {self.grad_clip}")
        if self.epochs < 1 or self.minibatches < 1 or self.hidden < 1:
            raise ValueError("epochs, minibatches and hidden must be >= 1, got "
                             f"{self.epochs}, {self.minibatches}, {self.hidden}")
        if not (0 <= self.gamma <= 1 and 0 <= self.gae_lambda <= 1):
            raise ValueError(f"gamma and gae_lambda must be in [0, 1], got {self.gamma}, {self.gae_lambda}")


class ActorCritic(nn.Module):
    """Encoder -> flattened features -> MLP(hidden) -> (n_actions logits, 1 value)."""

    def __init__(self, encoder: ConvEncoder, n_actions: int, hidden: int = 512):
        super().__init__()
        if n_actions < 1:
            raise ValueError(f"n_actions must be >= 1, got {n_actions}")
        self.encoder = encoder
        self.n_actions = n_actions
        self.head = mlp(encoder.feature_dim, [hidden], n_actions + 1)
        with torch.no_grad():
            # Small policy-output weights give a near-uniform first policy: Kaiming-scaled logits
            # would start PPO from an arbitrary, nearly deterministic policy that explores little.
            self.head[-1].weight[:n_actions].mul_(0.01)

    def features(self, obs: torch.Tensor, encoder: ConvEncoder | None = None) -> torch.Tensor:
        """[B, C, H, W] observations -> [B, feature_dim] flattened encoder features.

        encoder: read the observations with this conv (a copy of ``self.encoder``'s architecture, e.g. an
        acting snapshot) instead of the network's own; None = the network's own."""
        return (self.encoder if encoder is None else encoder)(obs).flatten(1)

    def heads(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, feature_dim] -> (logits [B, n_actions], value [B])."""
        out = self.head(features)
        return out[:, : self.n_actions], out[:, self.n_actions]


def policy_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, clip: float | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped surrogate -E[min(r A, clamp(r, 1 - clip, 1 + clip) A)], and the fraction of clipped ratios.
    clip: a number, or a 0-d tensor on the device (a captured update reads it from device memory)."""
    ratio = torch.exp(logp - old_logp)
    surrogate = torch.minimum(ratio * advantages, ratio.clamp(1 - clip, 1 + clip) * advantages)
    clipped = ((ratio - 1).abs() > clip).float().mean()
    return -surrogate.mean(), clipped


def value_loss(values: torch.Tensor, returns: torch.Tensor) -> torch.Tensor:
    """0.5 * E[(V - R)^2] (unclipped)."""
    return 0.5 * (values - returns).pow(2).mean()


def categorical_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean entropy of the categorical distributions with these logits."""
    logp_all = F.log_softmax(logits, dim=-1)
    return -(logp_all.exp() * logp_all).sum(-1).mean()


def ppo_loss(
    logits: torch.Tensor, values: torch.Tensor, batch: dict[str, torch.Tensor], clip: float | torch.Tensor,
    value_coef: float, entropy_coef: float, normalize_advantage: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss pi + value_coef * V - entropy_coef * H on a minibatch from ``Rollout.minibatches``."""
    logp = F.log_softmax(logits, dim=-1).gather(1, batch["actions"][:, None]).squeeze(1)
    adv = batch["advantages"]
    if normalize_advantage:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    pi_loss, clip_fraction = policy_loss(logp, batch["logp"], adv, clip)
    v_loss = value_loss(values, batch["returns"])
    entropy = categorical_entropy(logits)
    loss = pi_loss + value_coef * v_loss - entropy_coef * entropy
    with torch.no_grad():
        log_ratio = logp - batch["logp"]
        approx_kl = ((log_ratio.exp() - 1) - log_ratio).mean()  # non-negative, low-variance KL estimate
    return loss, {
        "rl/loss": loss.detach(), "rl/policy_loss": pi_loss.detach(), "rl/value_loss": v_loss.detach(),
        "rl/entropy": entropy.detach(), "rl/approx_kl": approx_kl, "rl/clip_fraction": clip_fraction,
    }


def start_update(optimizer: torch.optim.Optimizer, cfg: PPOConfig, progress: float) -> tuple[float, float]:
    """Set the optimizer's learning rate for an update at ``progress`` (fraction of training done, in [0, 1]);
    returns (learning rate, ratio clip), both annealed linearly to 0 with ``cfg.anneal``."""
    scale = max(0.0, 1.0 - progress) if cfg.anneal else 1.0
    lr, clip = cfg.lr * scale, cfg.clip * scale
    for group in optimizer.param_groups:
        if torch.is_tensor(group["lr"]):  # a captured step reads its rate from device memory
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr
    return lr, clip


def update_metrics(means: dict[str, float], rollout: Rollout, advantages: torch.Tensor, returns: torch.Tensor,
                   lr: float, clip: float) -> dict[str, float]:
    """An update's metrics: the minibatch averages (``means``), the value's explained variance, lr, clip and the
    mean advantage."""
    out = dict(means)
    var_ret = returns.var()
    out["rl/explained_variance"] = float(1 - (returns - rollout.values).var() / var_ret) if var_ret > 0 else 0.0
    out.update({"rl/lr": lr, "rl/clip": clip, "rl/advantage_mean": float(advantages.mean())})
    return out


def policy_input_spec(encoder: ConvEncoder, mode: EncoderMode) -> tuple[tuple[int, ...], torch.dtype]:
    """Shape (per sample) and dtype of what a rollout stores for the policy: the conv's features where the RL
    loss cannot reach the conv (they are computed once, while acting), else the uint8 observation."""
    if mode is not EncoderMode.end_to_end:
        return (encoder.feature_dim,), torch.float32
    return encoder.in_shape, torch.uint8


def sample_actions(logits: torch.Tensor, greedy: bool, generator: torch.Generator | None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, n_actions] logits -> (actions [N], their log-probabilities [N]): sampled, or the most likely (``greedy``)."""
    logp_all = F.log_softmax(logits, dim=-1)
    if greedy:
        action = logits.argmax(dim=-1)
    else:
        action = torch.multinomial(logp_all.exp(), 1, generator=generator).squeeze(1)
    return action, logp_all.gather(1, action[:, None]).squeeze(1)


@dataclass
class Act:
    """What ``PPOAgent.act`` returns for a batch of observations."""

    action: torch.Tensor
    """[N] int64."""
    logp: torch.Tensor
    """[N] log-probability of the action."""
    value: torch.Tensor
    """[N] value estimate."""
    policy_input: torch.Tensor
    """What the rollout stores for the update: the observation, or its detached features (see ``caches_features``)."""


class MinibatchStep(Protocol):
    """What ``PPOModule.update`` runs each minibatch with: ``step(batch, clip)`` updates and sums its metrics,
    ``read()`` returns their means over the update (one device sync)."""

    def __call__(self, batch: dict[str, torch.Tensor], clip: float) -> None: ...

    def read(self) -> dict[str, float]: ...


class EagerMinibatches:
    """The plain ``MinibatchStep``: each minibatch checked and run eagerly, its metrics summed on the device."""

    def __init__(self, agent: PPOModule):
        self.agent = agent
        self.sums: dict[str, torch.Tensor] = {}
        self.n = 0

    def __call__(self, batch: dict[str, torch.Tensor], clip: float) -> None:
        for k, v in self.agent.minibatch_update(batch, clip).items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.n += 1

    def read(self) -> dict[str, float]:
        return dict(zip(self.sums, (torch.stack(list(self.sums.values())) / self.n).tolist()))


class PPOModule(nn.Module):
    """What every PPO agent holds: a network ``net`` with a conv ``net.encoder``, its mode, the RL optimizer over
    ``rl_parameters()`` (which each agent defines) and the counters needed to resume; and its state layout,
    as SACAgent's: ``state_dict()["modules"]`` holds the weights (the network under ``net.``), beside the
    optimizer state and the counters.

    fast: run the update's forward pass under this fast path's autocast and step with its optimizer kernels
    (``fastpath.adam``); None runs it as it is. (The activation layout is set on ``net`` by
    ``fastpath.prepare_module``.)
    """

    def __init__(self, net: nn.Module, mode: EncoderMode, cfg: PPOConfig, device: torch.device | str,
                 fast: FastPathConfig | None):
        super().__init__()
        self.net = net.to(device)
        self.mode = EncoderMode(mode)
        self.cfg = cfg
        self.device = torch.device(device)
        self.fast = fast
        if self.mode is EncoderMode.frozen:
            self.net.encoder.requires_grad_(False)  # nothing, RL or UL, may change a frozen encoder
        self.optimizer = adam(self.rl_parameters(), fast, lr=cfg.lr)
        self.iterations = 0
        """PPO updates (one per rollout) done so far."""
        self.gradient_steps = 0

    def rl_parameters(self) -> list[nn.Parameter]:
        """What the RL optimizer owns."""
        raise NotImplementedError

    def steps(self, rollout: Any) -> Rollout:
        """The ``Rollout`` of steps within what ``update`` is given (itself, for PPOAgent)."""
        return rollout

    def minibatches(self, rollout: Any, advantages: torch.Tensor, returns: torch.Tensor,
                    generator: torch.Generator | None) -> Iterator[dict[str, torch.Tensor]]:
        """One epoch over ``rollout``: the shuffled minibatches, each what ``heads`` recomputes the policy from plus
        what ``ppo_loss`` reads (actions, logp, advantages, returns, all [B])."""
        raise NotImplementedError

    def heads(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """A minibatch's recomputed float32 (logits [B, A], values [B]), with the mode's gradient split applied."""
        raise NotImplementedError

    def update(self, rollout: Any, progress: float = 0.0, generator: torch.Generator | None = None,
               step: MinibatchStep | None = None) -> dict[str, float]:
        """PPO epochs over one rollout. ``progress`` in [0, 1] is the fraction of training done,
        which sets the annealed learning rate and ratio clip.

        step: runs each minibatch's update and sums its metrics (the training loop's sync-free step,
        ``atcrl.train.ppo_step.PPOStep``, captured as a CUDA graph under cuda_graph); None = eagerly here,
        each loss checked for NaN/inf before its optimizer step."""
        cfg, steps = self.cfg, self.steps(rollout)
        lr, clip = start_update(self.optimizer, cfg, progress)
        step = EagerMinibatches(self) if step is None else step
        advantages, returns = steps.advantages(cfg.gamma, cfg.gae_lambda)
        n = 0
        for _ in range(cfg.epochs):
            for batch in self.minibatches(rollout, advantages, returns, generator):
                step(batch, clip)
                n += 1
        self.iterations += 1
        self.gradient_steps += n
        return update_metrics(step.read(), steps, advantages, returns, lr, clip)  # one device sync

    def minibatch_update(self, batch: dict[str, torch.Tensor], clip: float | torch.Tensor, *,
                         check: bool = True) -> dict[str, torch.Tensor]:
        """One gradient step on a minibatch of ``minibatches``: loss, backward, clip, Adam step. Returns its
        metrics as 0-d device tensors.

        clip: the ratio clip, a number or a 0-d device tensor (what a captured step reads each replay).
        check: stop with FloatingPointError before the optimizer step if the loss is NaN/inf (reads it: a device
        sync); False reads nothing back, so the step can be captured (a NaN shows in the metrics instead)."""
        cfg = self.cfg
        logits, values = self.heads(batch)
        loss, metrics = ppo_loss(logits, values, batch, clip, cfg.value_coef, cfg.entropy_coef,
                                 cfg.normalize_advantage)
        if check and not torch.isfinite(loss):
            raise FloatingPointError(
                f"PPO loss is {loss.item()} at iteration {self.iterations} "
                f"(policy {metrics['rl/policy_loss'].item()}, value {metrics['rl/value_loss'].item()}, "
                f"entropy {metrics['rl/entropy'].item()}): stopping before it corrupts the weights; "
                "check the learning rate, the rewards and the observations for NaN/inf"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        metrics["rl/grad_norm"] = clip_gradients(self.rl_parameters(), cfg.grad_clip, sync_free=not check).detach()
        self.optimizer.step()
        return metrics

    @property
    def caches_features(self) -> bool:
        """Store conv features instead of pixels in the rollout.

        When the RL loss cannot reach the encoder, the features computed while acting are exactly
        what the PPO epochs would recompute, provided the encoder does not change in between —
        the loops run UL updates only after the RL update, so it does not. (With PPO's overlap_ul,
        UL updates run while acting, which reads a snapshot of the conv: the stored features are still
        the ones the actions were sampled from.)
        """
        return self.mode is not EncoderMode.end_to_end

    def policy_input_spec(self) -> tuple[tuple[int, ...], torch.dtype]:
        """Shape (per sample) and dtype of what the rollout stores for the policy, for ``Rollout.empty``."""
        return policy_input_spec(self.net.encoder, self.mode)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        """Networks, optimizer and counters: everything needed to resume the agent."""
        return {
            "modules": super().state_dict(*args, **kwargs), "optimizer": self.optimizer.state_dict(),
            "iterations": self.iterations, "gradient_steps": self.gradient_steps, "mode": self.mode.value,
        }

    def load_state_dict(self, state: dict[str, Any], strict: bool = True, assign: bool = False):  # type: ignore[override]
        name = type(self).__name__
        if not isinstance(state, dict) or "modules" not in state:
            raise ValueError(f"not a {name} state (expected the dict from {name}.state_dict())")
        if state.get("mode", self.mode.value) != self.mode.value:
            raise ValueError(f"this state was saved by a {state['mode']!r} agent; this agent is {self.mode.value!r}")
        result = super().load_state_dict(state["modules"], strict=strict, assign=assign)
        self.optimizer.load_state_dict(state["optimizer"])
        self.iterations = int(state["iterations"])
        self.gradient_steps = int(state["gradient_steps"])
        return result


class PPOAgent(PPOModule):
    """An ActorCritic, its mode, the RL optimizer and the counters needed to resume (see ``PPOModule``)."""

    def __init__(self, net: ActorCritic, mode: EncoderMode, cfg: PPOConfig = PPOConfig(),
                 device: torch.device | str = "cpu", fast: FastPathConfig | None = None):
        super().__init__(net, mode, cfg, device, fast)
        self._acting: list[ConvEncoder | None] = [None]  # in a list, so the snapshot is no submodule of the agent

    @property
    def acting_encoder(self) -> ConvEncoder | None:
        """The conv ``act`` and ``value`` read instead of ``net.encoder`` when set: a loop that trains the
        conv in another thread while it collects (PPOLoopConfig.overlap_ul) points it at a snapshot for the
        collection; None = the network's own conv. The update always reads ``net.encoder``. It is not part
        of the agent's state."""
        return self._acting[0]

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "acting_encoder":  # nn.Module would register a module value as a submodule, bypassing a setter
            self._acting[0] = value
        else:
            super().__setattr__(name, value)

    def rl_parameters(self) -> list[nn.Parameter]:
        """What the RL optimizer owns: the heads, plus the encoder only when RL trains it."""
        params = list(self.net.head.parameters())
        if self.mode is EncoderMode.end_to_end:
            params += list(self.net.encoder.parameters())
        return params

    def _obs(self, obs: torch.Tensor | np.ndarray) -> torch.Tensor:
        return torch.as_tensor(obs).to(self.device, non_blocking=True)

    def _heads(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 logits and values from stored policy inputs, with the mode's gradient split applied;
        the forward pass runs under the fast path's autocast."""
        with contextlib.nullcontext() if self.fast is None else autocast(self.device, self.fast):
            features = inputs if self.caches_features else self.net.features(inputs)
            logits, values = self.net.heads(rl_features(features, self.mode))
        return logits.float(), values.float()

    @torch.no_grad()
    def act(self, obs: torch.Tensor | np.ndarray, *, greedy: bool = False,
            generator: torch.Generator | None = None) -> Act:
        """Sample (or, with ``greedy``, take the most likely) actions for a batch of observations."""
        obs = self._obs(obs)
        features = self.net.features(obs, self.acting_encoder)
        logits, value = self.net.heads(features)
        action, logp = sample_actions(logits, greedy, generator)
        return Act(action, logp, value, features if self.caches_features else obs)

    @torch.no_grad()
    def value(self, obs: torch.Tensor | np.ndarray) -> torch.Tensor:
        """[N] value estimates."""
        return self.net.heads(self.net.features(self._obs(obs), self.acting_encoder))[1]

    def minibatches(self, rollout: Rollout, advantages: torch.Tensor, returns: torch.Tensor,
                    generator: torch.Generator | None) -> Iterator[dict[str, torch.Tensor]]:
        """One epoch: the rollout's shuffled flat minibatches."""
        return rollout.minibatches(advantages, returns, self.cfg.minibatches, generator)

    def heads(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self._heads(batch["inputs"])
