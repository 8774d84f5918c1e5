"""Pixel control: a dueling deconv Q-head learns how much each action changes each image cell.

Cell rewards are the mean absolute change of the newest frame between o_t and o_{t+1}, averaged
over cells of a centre crop (4×4 cells of an 80×80 crop by default: a 20×20 grid). The head
predicts Q(o_t, a) for every action and cell; the taken action's Q regresses the Monte-Carlo
return of the cell rewards with discount γ, computed within the sampled window (it stops at the
episode end and is truncated at the window end). Discrete actions only: the head has one output
map per action, which a continuous action space does not provide.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from atcrl.data.batches import SequenceBatch
from atcrl.nets.encoders import ConvEncoder, check_input, kaiming_init
from atcrl.ul.base import SamplingNeed
from atcrl.ul.contrastive import masked_mean
from atcrl.ul.inputs import action_indices, require_action_dim, to_unit


@dataclass(frozen=True)
class PixelControlConfig:
    """Pixel-control hyperparameters; the defaults are the paper's UL-benchmark settings."""

    batch_size: int = 16
    """Sequences per batch (B); every step but the last of each window is scored."""
    length: int = 32
    """Steps per sequence (T); returns are computed within this window."""
    gamma: float = 0.9
    """Discount of the cell-reward returns."""
    crop: int = 80
    """Side of the centre crop whose cells are rewarded (must fit in the image)."""
    cell: int = 4
    """Side of one cell in pixels (must divide crop)."""
    frame_channels: int | None = None
    """Channels of one frame in the stack (1 grey, 3 RGB); None: 3 if the stack's channel count is
    a multiple of 3, else 1."""
    hidden: int = 256
    """Width of the fully connected layer between the encoder features and the deconv."""
    deconv_channels: int = 32
    """Channels of the map that the final transposed conv upsamples to the cell grid."""
    grad_clip: float = 10.0
    """Max global gradient norm for this objective's updates (the training loop applies it)."""

    def __post_init__(self) -> None:
        if self.length < 2:
            raise ValueError(f"length must be >= 2 (a reward needs two frames), got {self.length}")
        if self.cell < 1 or self.crop % self.cell or self.crop // self.cell < 2:
            raise ValueError(f"cell ({self.cell}) must divide crop ({self.crop}) into a grid of at least 2x2")
        if not 0.0 <= self.gamma < 1.0:
            raise ValueError(f"gamma must be in [0, 1), got {self.gamma}")


def cell_rewards(
    obs: torch.Tensor, next_obs: torch.Tensor, crop: int, cell: int, frame_channels: int
) -> torch.Tensor:
    """Mean |newest frame of next_obs − newest frame of obs| over each cell of the centre crop.

    obs, next_obs: [..., k*C, H, W] stacks (uint8, or float already in [0, 1]).
    Returns [..., crop // cell, crop // cell] in [0, 1].
    """
    H, W = obs.shape[-2:]
    if crop > min(H, W):
        raise ValueError(f"pixel-control crop {crop} does not fit in {H}x{W} images")
    top, left = (H - crop) // 2, (W - crop) // 2
    window = (..., slice(-frame_channels, None), slice(top, top + crop), slice(left, left + crop))
    diff = (to_unit(next_obs[window]) - to_unit(obs[window])).abs().mean(-3)  # [..., crop, crop]
    n = crop // cell
    return diff.unflatten(-1, (n, cell)).unflatten(-3, (n, cell)).mean((-3, -1))


def discounted_returns(rewards: torch.Tensor, known: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = r_t + γ G_{t+1} along dim 0, stopping at the first step whose reward is not known.

    rewards: [T, B, ...]; known: bool [T, B]. G_t = 0 where r_t is unknown, so a return never
    reaches past an episode end; the window end truncates it (G_T = 0).
    """
    mask = known.reshape(*known.shape, *(1,) * (rewards.ndim - known.ndim))
    returns = torch.zeros_like(rewards)
    future = torch.zeros_like(rewards[0])
    for t in range(len(rewards) - 1, -1, -1):
        future = torch.where(mask[t], rewards[t] + gamma * future, torch.zeros_like(future))
        returns[t] = future
    return returns


class DuelingDeconvQ(nn.Module):
    """Features -> fc -> fc -> [C, n/2, n/2] -> transposed conv -> Q [A, n, n] = V + (Adv − mean Adv)."""

    def __init__(self, feature_dim: int, num_actions: int, grid: int, hidden: int, channels: int):
        super().__init__()
        self.start = (channels, grid // 2, grid // 2)
        self.fc = nn.Sequential(
            nn.Linear(feature_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, channels * (grid // 2) ** 2),
            nn.ReLU(),
        )
        # kernel 4, stride 2, padding 1 doubles the side; output_padding adds the odd row/column.
        self.deconv = nn.ConvTranspose2d(channels, num_actions + 1, 4, 2, 1, output_padding=grid % 2)
        kaiming_init(self)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.deconv(self.fc(features.flatten(1)).view(-1, *self.start))
        value, advantage = x[:, :1], x[:, 1:]
        return value + advantage - advantage.mean(1, keepdim=True)


class PixelControl(nn.Module):
    """Pixel control around an online encoder; needs a discrete action space."""

    def __init__(
        self,
        encoder: ConvEncoder,
        cfg: PixelControlConfig = PixelControlConfig(),
        *,
        action_dim: int | None = None,
        discrete_actions: bool = False,
    ):
        super().__init__()
        if not discrete_actions:
            raise ValueError(
                "pixel control needs a discrete action space (one Q map per action); "
                "for continuous control use another objective"
            )
        self.cfg = cfg
        self.encoder = encoder
        self.action_dim = require_action_dim(action_dim, "pixel control")
        C, H, W = encoder.in_shape
        if cfg.crop > min(H, W):
            raise ValueError(f"pixel-control crop {cfg.crop} does not fit in the encoder's {H}x{W} input")
        self.frame_channels = cfg.frame_channels or (3 if C % 3 == 0 else 1)
        if C % self.frame_channels:
            raise ValueError(f"frame_channels={self.frame_channels} does not divide the {C} stacked channels")
        self.head = DuelingDeconvQ(
            encoder.feature_dim, self.action_dim, cfg.crop // cfg.cell, cfg.hidden, cfg.deconv_channels
        )
        self.sampling = SamplingNeed(kind="sequences", batch_size=cfg.batch_size, length=cfg.length)

    def loss(self, batch: SequenceBatch) -> tuple[torch.Tensor, dict[str, float]]:
        if not isinstance(batch, SequenceBatch):
            raise TypeError(f"pixel control needs a SequenceBatch, got {type(batch).__name__}")
        check_input(self.encoder, tuple(batch.obs.shape[2:]))
        T = batch.obs.shape[0]
        if T < 2:
            raise ValueError(f"pixel control needs windows of at least 2 steps, got {T}")
        # r_t needs o_{t+1} of the same episode: step t is scored only while step t + 1 is valid.
        known = batch.valid.to(torch.long).cumprod(0).bool()[1:]  # [T-1, B]
        obs = batch.obs[:-1]
        rewards = cell_rewards(obs, batch.obs[1:], self.cfg.crop, self.cfg.cell, self.frame_channels)
        returns = discounted_returns(rewards, known, self.cfg.gamma)  # [T-1, B, n, n]

        q = self.head(self.encoder(obs.flatten(0, 1)))  # [(T-1)·B, A, n, n]
        a = action_indices(batch.action[:-1], self.action_dim, known).flatten()
        q_taken = q[torch.arange(len(a), device=q.device), a].view_as(returns)
        per_step = 0.5 * (q_taken - returns).pow(2).sum((-2, -1))  # summed over cells
        loss = masked_mean(per_step, known)
        names = ("ul/loss", "ul/mean_return", "ul/valid_fraction")
        values = torch.stack(
            [loss.detach(), masked_mean(returns.mean((-2, -1)), known), known.float().mean()]
        )
        return loss, dict(zip(names, values.tolist()))

    def after_update(self) -> None:
        """No momentum target: nothing to follow."""
