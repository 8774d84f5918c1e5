"""The minibatches that samplers produce and that agents and UL objectives consume.

All tensors live on one device. Observations are frame-stacked uint8 images
[B, k * C, H, W] (oldest frame first along channels) unless the replay holds latents.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TypeVar

import torch


class _TensorBatch:
    def to(self, device: torch.device | str, non_blocking: bool = False):
        """Copy every tensor to ``device`` (non-blocking from pinned memory on CUDA)."""
        moved = {
            f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }
        return replace(self, **moved)

    @property
    def batch_size(self) -> int:
        return int(getattr(self, fields(self)[0].name).shape[0])


@dataclass
class TransitionBatch(_TensorBatch):
    """n-step transitions for SAC."""

    obs: torch.Tensor
    """[B, k*C, H, W] observation at t."""
    action: torch.Tensor
    """[B, *action_shape] action taken at t."""
    reward: torch.Tensor
    """[B] n-step discounted return sum_{j<n} gamma^j r_{t+j} (stops at an episode end)."""
    discount: torch.Tensor
    """[B] gamma^n' * (1 - terminal): multiplies the bootstrap value at next_obs (0 after a true terminal)."""
    next_obs: torch.Tensor
    """[B, k*C, H, W] observation at t + n' (n' = n, or fewer steps if the episode ended first)."""
    task: torch.Tensor
    """[B] int64 task index (0 for single-task replay)."""


@dataclass
class PairBatch(_TensorBatch):
    """(anchor o_t, positive o_{t+dt}) pairs for ATC, AC, ST-DIM, VAE and inverse dynamics."""

    anchor: torch.Tensor
    """[B, k*C, H, W] observation at t."""
    positive: torch.Tensor
    """[B, k*C, H, W] observation at t + dt (clamped to the episode's last frame when invalid)."""
    valid: torch.Tensor
    """[B] bool: False where t + dt lies past the end of the anchor's episode."""
    actions: torch.Tensor
    """[B, dt, *action_shape] actions a_t .. a_{t+dt-1} (zero-size along dt when dt == 0)."""
    task: torch.Tensor
    """[B] int64 task index."""


@dataclass
class SequenceBatch(_TensorBatch):
    """Length-T windows for CPC and pixel control. Time-major like rlpyt: [T, B, ...]."""

    obs: torch.Tensor
    """[T, B, k*C, H, W] observations."""
    action: torch.Tensor
    """[T, B, *action_shape] action taken at each step (zeros at invalid steps)."""
    reward: torch.Tensor
    """[T, B] reward after each step (zeros at invalid steps)."""
    valid: torch.Tensor
    """[T, B] bool: False from the first step after the window's episode ended."""
    task: torch.Tensor
    """[B] int64 task index."""

    @property
    def batch_size(self) -> int:
        return int(self.obs.shape[1])


Batch = TypeVar("Batch", TransitionBatch, PairBatch, SequenceBatch)


def concat(parts: list[Batch]) -> Batch:
    """Batches of one kind joined along their batch axis: 0, or 1 for time-major sequences [T, B, ...]
    (whose per-sequence task ids [B] join along 0)."""
    cls = type(parts[0])
    dims = {f.name: (1 if cls is SequenceBatch and f.name != "task" else 0) for f in fields(cls)}
    return cls(**{name: torch.cat([getattr(p, name) for p in parts], dim=d) for name, d in dims.items()})
