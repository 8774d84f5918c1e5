"""Soft actor-critic from pixels on a shared conv encoder, in any of the three encoder modes.

The actor and the twin critics share one conv (the critic's). Each side puts its own linear
layer + LayerNorm on the conv features, then an MLP. The actor always reads the conv output
detached; whether the *critic* loss may train the conv is decided by ``EncoderMode`` in
``SACAgent.encode`` and nowhere else. Twin target critics (trunk + MLPs) and a target conv
follow the online weights by Polyak averaging.

In frozen mode the observations may be latents (the frozen conv's output, computed once when
the observation is stored); the agent then skips the conv and augments with a sub-pixel shift.
Latents are stored as float16, or as uint8 with one fixed quantisation step (``LATENT_HEADROOM``).

Precision: with a ``FastPathConfig`` the forward parts of the critic and actor losses run under
its autocast (bf16 where the device is faster with it); Q-values, the policy's mean and log-std
leave the networks as float32, so targets, log-probabilities and losses are computed in float32.
Backward passes and optimizer steps run outside autocast.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from atcrl.data.batches import TransitionBatch
from atcrl.fastpath import FastPathConfig, adam, autocast, clip_gradients
from atcrl.nets.augment import random_shift, subpixel_shift
from atcrl.nets.encoders import ConvEncoder
from atcrl.nets.mlp import mlp
from atcrl.nets.target import frozen_copy, momentum_update
from atcrl.rl.modes import EncoderMode, rl_features

ActMode = Literal["deterministic", "sample", "warmup"]
LatentDType = Literal["float16", "uint8"]

LATENT_HEADROOM = 2.0
"""uint8 latents: the quantisation step is fixed once, from the first observation with a non-zero feature the
agent encodes, so that this many times its largest feature maps to 255. Features are post-ReLU (>= 0), so
0 is exact and, below the top, every value is within half a step; larger values saturate at 255. With a
random conv, a random policy's observations peaked at 1.2x (cartpole) to 1.5x (walker) the first one's
maximum."""


@dataclass(frozen=True)
class SACConfig:
    """SAC hyperparameters; defaults are the paper's DMControl settings (cheetah: q_lr = pi_lr = 2e-4)."""

    latent_dim: int = 50
    """Width of each side's linear + LayerNorm layer on the conv features."""
    hidden: tuple[int, ...] = (1024, 1024)
    """Hidden layers of the actor MLP and of each critic MLP."""
    q_lr: float = 1e-3
    """Critic learning rate (Adam); the critic optimizer also holds the conv in end-to-end mode."""
    pi_lr: float = 1e-3
    """Actor learning rate (Adam)."""
    alpha_lr: float = 1e-4
    """Entropy-temperature learning rate (Adam with alpha_betas)."""
    alpha_betas: tuple[float, float] = (0.5, 0.999)
    """Adam betas for the temperature."""
    initial_alpha: float = 0.1
    """Starting entropy temperature alpha."""
    target_entropy: float | None = None
    """Entropy the temperature steers towards; None means -|A| (minus the action dimension)."""
    critic_tau: float = 0.01
    """Polyak rate of the target critic MLPs."""
    encoder_tau: float = 0.05
    """Polyak rate of the target conv and the target critic's linear + LayerNorm."""
    target_update_every: int = 2
    """Critic updates between target-network updates."""
    actor_update_every: int = 2
    """Critic updates between actor (and temperature) updates."""
    log_std_min: float = -10.0
    """Lower end of the actor's log-std range (a tanh squashes into [min, max])."""
    log_std_max: float = 2.0
    """Upper end of the actor's log-std range."""
    shift_pad: int = 4
    """Random-shift padding for pixel observations (obs and next_obs shifted independently); 0 = off."""
    latent_shift: float = 1.0
    """Max sub-pixel shift (in latent pixels) for latent observations; 0 = off."""
    warmup_std: float = 0.75
    """Fixed pre-tanh std around the actor's mean used while acting during the warm-up."""
    grad_clip: float = 0.0
    """Max gradient norm for critic and actor; 0 disables clipping (the norm is still logged)."""

    def __post_init__(self) -> None:
        if self.latent_dim < 1 or any(h < 1 for h in self.hidden):
            raise ValueError(f"latent_dim and hidden sizes must be >= 1, got {self.latent_dim}, {self.hidden}")
        if min(self.q_lr, self.pi_lr, self.alpha_lr, self.initial_alpha) <= 0:
            raise ValueError("q_lr, pi_lr, alpha_lr and initial_alpha must be > 0")
        if not (0 < self.critic_tau <= 1 and 0 < self.encoder_tau <= 1):
            raise ValueError(f"taus must be in (0, 1], got {self.critic_tau}, {self.encoder_tau}")
        if self.target_update_every < 1 or self.actor_update_every < 1:
            raise ValueError("target_update_every and actor_update_every must be >= 1")
        if self.log_std_min >= self.log_std_max:
            raise ValueError(f"log_std_min ({self.log_std_min}) must be below log_std_max ({self.log_std_max})")
        if self.shift_pad < 0 or self.latent_shift < 0 or self.warmup_std <= 0 or self.grad_clip < 0:
            raise ValueError("shift_pad, latent_shift and grad_clip must be >= 0 and warmup_std > 0")


class Trunk(nn.Module):
    """Flattened conv features -> linear -> LayerNorm: each side's own RL-trained projection."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.norm(self.linear(features.flatten(1)))


class TwinQ(nn.Module):
    """Two independent Q MLPs on [trunk output, action]."""

    def __init__(self, in_dim: int, action_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.q1 = mlp(in_dim + action_dim, hidden, 1, init="orthogonal")
        self.q2 = mlp(in_dim + action_dim, hidden, 1, init="orthogonal")

    def forward(self, h: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([h, action], dim=1)
        # float32 out (a no-op without autocast): targets and losses are computed in float32.
        return self.q1(x).squeeze(1).float(), self.q2(x).squeeze(1).float()


def squashed_sample(
    mean: torch.Tensor, log_std: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reparameterised tanh-Gaussian sample and its log-probability (summed over action dims)."""
    noise = torch.randn(mean.shape, device=mean.device, dtype=mean.dtype, generator=generator)
    pre = mean + noise * log_std.exp()
    log_prob = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(1)
    # log(1 - tanh(x)^2) = 2 (log 2 - x - softplus(-2x)), which stays finite for large |x|.
    log_prob = log_prob - (2 * (math.log(2) - pre - F.softplus(-2 * pre))).sum(1)
    return torch.tanh(pre), log_prob


def _finite(value: torch.Tensor, what: str) -> None:
    if not torch.isfinite(value).all():
        raise FloatingPointError(
            f"SAC {what} is {value.detach().cpu().tolist()}: stopping before it corrupts the weights "
            "(check the learning rates, the reward scale and the replay for NaN/inf)"
        )


class SACAgent(nn.Module):
    """SAC networks, optimizers and the update rule; ``encode`` holds the encoder-mode gradient split.

    encoder: the conv (shared with a UL objective in decoupled mode; never updated in frozen mode).
    latent_obs: observations are the encoder's outputs already (frozen mode only).
    latent_dtype: how latents are stored ("uint8": quantised with the ``latent_scale`` buffer, saved with
    the weights, set from the first latent encoded; see ``LATENT_HEADROOM``).
    fast: run the losses' forward parts under this fast path's autocast and step with its optimizer kernels
    (``fastpath.adam``); None runs them as they are. (The activation layout is set on the modules by ``fastpath.prepare_module``.)
    """

    def __init__(
        self,
        encoder: ConvEncoder,
        action_dim: int,
        mode: EncoderMode | str,
        cfg: SACConfig = SACConfig(),
        *,
        latent_obs: bool = False,
        latent_dtype: LatentDType = "float16",
        device: str | torch.device = "cpu",
        fast: FastPathConfig | None = None,
    ):
        super().__init__()
        mode = EncoderMode(mode)
        if latent_obs and mode is not EncoderMode.frozen:
            raise ValueError(f"latent observations need a frozen encoder; mode is {mode.value}")
        if action_dim < 1:
            raise ValueError(f"action_dim must be >= 1, got {action_dim}")
        if latent_dtype not in ("float16", "uint8"):
            raise ValueError(f"latent_dtype must be 'float16' or 'uint8', got {latent_dtype!r}")
        self.cfg, self.mode, self.latent_obs, self.action_dim = cfg, mode, latent_obs, action_dim
        self.latent_dtype, self.fast = latent_dtype, fast
        if latent_dtype == "uint8":
            # A buffer, so checkpoints carry it: the replay's uint8 latents mean nothing without it.
            self.register_buffer("latent_scale", torch.zeros(()))
        self.encoder = encoder
        if mode is EncoderMode.frozen:
            encoder.requires_grad_(False)
        # A frozen conv never moves, so it is its own target; the others get a slow-moving copy.
        self.target_encoder = None if mode is EncoderMode.frozen else frozen_copy(encoder)
        D, L = encoder.feature_dim, cfg.latent_dim
        self.critic_trunk = Trunk(D, L)
        self.critic = TwinQ(L, action_dim, cfg.hidden)
        self.target_critic_trunk = frozen_copy(self.critic_trunk)
        self.target_critic = frozen_copy(self.critic)
        self.actor_trunk = Trunk(D, L)
        self.actor = mlp(L, cfg.hidden, 2 * action_dim, init="orthogonal")
        self.log_alpha = nn.Parameter(torch.tensor(math.log(cfg.initial_alpha)))
        self.target_entropy = -float(action_dim) if cfg.target_entropy is None else cfg.target_entropy
        self.to(device)

        critic_params = [*self.critic_trunk.parameters(), *self.critic.parameters()]
        if mode is EncoderMode.end_to_end:
            critic_params = [*encoder.parameters(), *critic_params]
        self.critic_opt = adam(critic_params, fast, lr=cfg.q_lr)
        self.actor_opt = adam([*self.actor_trunk.parameters(), *self.actor.parameters()], fast, lr=cfg.pi_lr)
        self.alpha_opt = adam([self.log_alpha], fast, lr=cfg.alpha_lr, betas=cfg.alpha_betas)
        self.updates = 0
        """Critic updates done so far (drives the actor and target-update cadence)."""

    @property
    def device(self) -> torch.device:
        return self.log_alpha.device

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.detach().exp()

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """The fast path's autocast for loss forward passes (nothing without a ``fast`` config)."""
        with contextlib.nullcontext() if self.fast is None else autocast(self.device, self.fast):
            yield

    # ------------------------------------------------------------------ features
    def conv(self, obs: torch.Tensor) -> torch.Tensor:
        """Online conv features of (augmented) observations; latents pass through as float."""
        return self.latent_features(obs) if self.latent_obs else self.encoder(obs)

    def target_conv(self, obs: torch.Tensor) -> torch.Tensor:
        if self.latent_obs:
            return self.latent_features(obs)
        return (self.target_encoder or self.encoder)(obs)

    def latent_features(self, latents: torch.Tensor) -> torch.Tensor:
        """float32 features from stored latents: uint8 ones dequantised, float ones as they are."""
        if latents.dtype == torch.uint8:
            return latents.float() * self.latent_scale
        return latents.float()

    def encode(self, obs: torch.Tensor, keep_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Conv features once, split by mode: (raw features, critic input, actor input).

        The critic input carries gradient to the conv only in end-to-end mode (``rl_features``);
        the actor input is always detached. The raw features keep their graph in decoupled mode
        when ``keep_graph`` is set, so a UL objective can train the conv on this same forward pass.
        """
        needs_graph = self.mode is EncoderMode.end_to_end or (self.mode is EncoderMode.decoupled and keep_graph)
        with torch.set_grad_enabled(needs_graph and torch.is_grad_enabled()):
            features = self.conv(obs)
        return features, rl_features(features, self.mode), features.detach()

    def augment(self, obs: torch.Tensor) -> torch.Tensor:
        """Random shift for pixels, sub-pixel shift for latents (independent per sample)."""
        if self.latent_obs:
            shift = self.cfg.latent_shift
            return subpixel_shift(self.latent_features(obs), shift) if shift > 0 else obs
        return random_shift(obs, pad=self.cfg.shift_pad) if self.cfg.shift_pad > 0 else obs

    @torch.no_grad()
    def latent(self, obs: torch.Tensor) -> torch.Tensor:
        """What a latent replay stores for pixel observations: the frozen conv's output as ``latent_dtype``.

        uint8: the first call whose features are not all zero fixes ``latent_scale`` (``LATENT_HEADROOM``).
        Nothing here reads a value back to the host (no device sync per agent step): whether the scale is
        still unset is decided on the device, and an unset scale (zeros only so far) stores zeros, exact in any.
        """
        if self.mode is not EncoderMode.frozen:
            raise ValueError("only a frozen encoder's outputs can be cached as latents")
        features = self.encoder(obs.to(self.device, non_blocking=True))
        if self.latent_dtype == "float16":
            return features.half()
        unset = self.latent_scale == 0
        self.latent_scale.copy_(torch.where(unset, LATENT_HEADROOM * features.max() / 255, self.latent_scale))
        scale = self.latent_scale
        levels = (features / torch.where(scale > 0, scale, 1.0)).round_().clamp_(0, 255)
        return torch.where(scale > 0, levels, 0.0).to(torch.uint8)

    # ------------------------------------------------------------------ policy
    def policy(self, actor_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-tanh mean and log-std (squashed into [log_std_min, log_std_max])."""
        mean, raw = self.actor(self.actor_trunk(actor_input)).float().chunk(2, dim=1)
        lo, hi = self.cfg.log_std_min, self.cfg.log_std_max
        return mean, lo + 0.5 * (hi - lo) * (torch.tanh(raw) + 1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, mode: ActMode = "sample", generator: torch.Generator | None = None) -> np.ndarray:
        """Actions in [-1, 1] for one observation [C, H, W] or a batch [B, C, H, W].

        "deterministic": tanh(mean). "sample": the learned tanh-Gaussian. "warmup": tanh of a
        Gaussian around the actor's mean with the fixed std ``warmup_std`` (initial exploration).
        """
        single = obs.dim() == 3
        obs = obs.to(self.device, non_blocking=True)
        obs = obs[None] if single else obs
        mean, log_std = self.policy(self.conv(obs))
        if mode == "deterministic":
            action = torch.tanh(mean)
        elif mode in ("sample", "warmup"):
            if mode == "warmup":
                log_std = torch.full_like(log_std, math.log(self.cfg.warmup_std))
            action, _ = squashed_sample(mean, log_std, generator)
        else:
            raise ValueError(f"unknown act mode {mode!r}: use 'deterministic', 'sample' or 'warmup'")
        action = action.cpu().numpy()
        return action[0] if single else action

    # ------------------------------------------------------------------ losses
    def critic_loss(
        self, batch: TransitionBatch, *, keep_graph: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """0.5 * (MSE(q1, y) + MSE(q2, y)) on augmented obs; returns (loss, raw features, actor input, stats)."""
        with self.autocast():
            features, critic_in, actor_in = self.encode(batch.obs, keep_graph=keep_graph)
            q1, q2 = self.critic(self.critic_trunk(critic_in), batch.action)
            with torch.no_grad():
                next_features = self.target_conv(batch.next_obs)
                # The online actor reads the target conv's features, so next_obs needs one conv pass.
                next_action, next_log_prob = squashed_sample(*self.policy(next_features))
                tq1, tq2 = self.target_critic(self.target_critic_trunk(next_features), next_action)
        with torch.no_grad():
            soft_value = torch.min(tq1, tq2) - self.alpha * next_log_prob
            target = batch.reward + batch.discount * soft_value
        loss = 0.5 * (F.mse_loss(q1, target) + F.mse_loss(q2, target))
        stats = {"rl/q1": q1.detach().mean(), "rl/q_target": target.mean(), "rl/q_gap": (q1 - q2).detach().abs().mean()}
        return loss, features, actor_in, stats

    def actor_alpha_loss(
        self, actor_in: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Actor loss E[alpha log pi - min Q] and temperature loss -log_alpha (log pi + target entropy)."""
        with self.autocast():
            mean, log_std = self.policy(actor_in)
            action, log_prob = squashed_sample(mean, log_std)
            q1, q2 = self.critic(self.critic_trunk(actor_in), action)
        actor_loss = (self.alpha * log_prob - torch.min(q1, q2)).mean()
        alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
        stats = {"rl/entropy": -log_prob.detach().mean(), "rl/log_std": log_std.detach().mean()}
        return actor_loss, alpha_loss, stats

    # ------------------------------------------------------------------ update
    def prepare(self, batch: TransitionBatch) -> TransitionBatch:
        """Move a sampled batch to the agent's device and augment obs and next_obs independently."""
        batch = batch.to(self.device, non_blocking=True)
        batch.obs, batch.next_obs = self.augment(batch.obs), self.augment(batch.next_obs)
        return batch

    def schedule(self, update: int) -> tuple[bool, bool]:
        """(actor step, target update) for the update with 0-based index ``update``."""
        return update % self.cfg.actor_update_every == 0, (update + 1) % self.cfg.target_update_every == 0

    def update(
        self, batch: TransitionBatch, *, keep_graph: bool = False
    ) -> tuple[dict[str, float], torch.Tensor]:
        """One SAC update on an already prepared (on-device, augmented) batch.

        Returns the metrics and the online conv features of ``batch.obs``; in decoupled mode with
        ``keep_graph`` they still carry their graph, for a UL loss on the same forward pass.
        Each loss is checked for NaN/inf before its optimizer step.
        """
        actor, targets = self.schedule(self.updates)
        stats, features = self.update_tensors(batch, actor=actor, targets=targets, keep_graph=keep_graph,
                                              check=True)
        self.updates += 1
        names = list(stats)
        return dict(zip(names, torch.stack(list(stats.values())).tolist())), features  # one sync for all

    def update_tensors(
        self, batch: TransitionBatch, *, actor: bool, targets: bool, keep_graph: bool = False, check: bool = False
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The update's arithmetic, with its metrics as float32 0-d tensors on the device.

        actor / targets: whether this update steps the actor and temperature, and moves the targets
        (``schedule`` says which, from the update count, which this leaves to the caller). Without
        ``check`` nothing here waits for the device, so it can be captured as a CUDA graph: a NaN/inf
        loss is then found when the metrics are read (``rl/critic_loss``, ``rl/actor_loss``).
        """
        critic_loss, features, actor_in, stats = self.critic_loss(batch, keep_graph=keep_graph)
        if check:
            _finite(critic_loss, "critic loss")
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward(inputs=self._params(self.critic_opt))
        stats["rl/critic_grad_norm"] = self._clip(self.critic_opt, sync_free=not check)
        self.critic_opt.step()
        stats["rl/critic_loss"] = critic_loss.detach()

        if actor:
            actor_loss, alpha_loss, actor_stats = self.actor_alpha_loss(actor_in)
            if check:
                _finite(actor_loss, "actor loss")
            self.actor_opt.zero_grad(set_to_none=True)
            # inputs= keeps the actor loss's gradient out of the critic it reads Q from.
            actor_loss.backward(inputs=self._params(self.actor_opt))
            stats["rl/actor_grad_norm"] = self._clip(self.actor_opt, sync_free=not check)
            self.actor_opt.step()
            self.alpha_opt.zero_grad(set_to_none=True)
            alpha_loss.backward(inputs=[self.log_alpha])
            self.alpha_opt.step()
            stats.update(actor_stats)
            stats["rl/actor_loss"] = actor_loss.detach()

        if targets:
            self.update_targets()
        stats["rl/alpha"] = self.alpha
        return {k: v.float().reshape(()) for k, v in stats.items()}, features

    @torch.no_grad()
    def update_targets(self) -> None:
        """Critic MLPs at critic_tau; critic trunk and conv at encoder_tau."""
        momentum_update(self.target_critic, self.critic, self.cfg.critic_tau)
        momentum_update(self.target_critic_trunk, self.critic_trunk, self.cfg.encoder_tau)
        if self.target_encoder is not None:
            momentum_update(self.target_encoder, self.encoder, self.cfg.encoder_tau)

    @staticmethod
    def _params(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
        return [p for group in opt.param_groups for p in group["params"]]

    def _clip(self, opt: torch.optim.Optimizer, *, sync_free: bool) -> torch.Tensor:
        return clip_gradients(self._params(opt), self.cfg.grad_clip, sync_free=sync_free)

    # ------------------------------------------------------------------ state
    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        """Everything needed to resume: networks, targets, log_alpha, optimizers and the update count."""
        return {
            "modules": super().state_dict(*args, **kwargs),
            "critic_opt": self.critic_opt.state_dict(),
            "actor_opt": self.actor_opt.state_dict(),
            "alpha_opt": self.alpha_opt.state_dict(),
            "updates": self.updates,
            "mode": self.mode.value,
        }

    def load_state_dict(self, state: dict[str, Any], strict: bool = True, assign: bool = False):  # type: ignore[override]
        if not isinstance(state, dict) or "modules" not in state:
            raise ValueError("not a SACAgent state (expected the dict from SACAgent.state_dict())")
        if state.get("mode", self.mode.value) != self.mode.value:
            raise ValueError(f"state was saved in {state['mode']} mode, this agent is {self.mode.value}")
        result = super().load_state_dict(state["modules"], strict=strict, assign=assign)
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.alpha_opt.load_state_dict(state["alpha_opt"])
        self.updates = int(state["updates"])
        return result
