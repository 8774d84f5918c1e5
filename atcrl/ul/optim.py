"""The UL optimizer and learning-rate schedule, shared by offline pretraining and online RL.

The optimizer owns exactly the objective's trainable parameters: the encoder it trains and its
own heads, never a momentum target and never an RL head, so the gradient split between UL and
RL is decided by which parameters each optimizer holds.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from atcrl.data.batches import PairBatch, SequenceBatch
from atcrl.fastpath import FastPathConfig, adam, autocast, clip_gradients
from atcrl.ul.base import Objective


@dataclass(frozen=True)
class ULOptimConfig:
    """Adam with linear warm-up then cosine annealing; defaults are the paper's offline settings."""

    lr: float = 1e-3
    """Peak learning rate (reached at the end of warm-up)."""
    warmup_updates: int = 1000
    """Updates over which the learning rate rises linearly from lr / warmup_updates to lr."""
    total_updates: int = 10_000
    """Updates in the whole run; the cosine reaches 0 here and stays there."""
    schedule: Literal["cosine", "constant"] = "cosine"
    """After warm-up: "cosine" anneals to 0 at total_updates, "constant" keeps lr (DMLab online)."""
    grad_clip: float = 10.0
    """Max global gradient norm; 0 disables clipping (the norm is still logged)."""
    weight_decay: float = 0.0
    """L2 penalty on weight matrices and conv kernels (biases and other 1-d parameters are exempt)."""

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.warmup_updates < 0 or self.total_updates < 1:
            raise ValueError("warmup_updates must be >= 0 and total_updates >= 1, got "
                             f"{self.warmup_updates} and {self.total_updates}")
        if self.schedule == "cosine" and self.warmup_updates >= self.total_updates:
            raise ValueError(f"warmup_updates ({self.warmup_updates}) must be less than total_updates "
                             f"({self.total_updates}) for a cosine schedule")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if self.grad_clip < 0 or self.weight_decay < 0:
            raise ValueError("grad_clip and weight_decay must be >= 0")


def objective_grad_clip(objective_cfg: Any, default: float) -> float:
    """An objective's own gradient clip where its config has one (CPC: 1000), else ``default``: offline and
    online UL clip the same objective the same way."""
    return float(getattr(objective_cfg, "grad_clip", default))


def lr_factor(update: int, cfg: ULOptimConfig) -> float:
    """Multiplier of cfg.lr for the update with 0-based index ``update``."""
    if update < cfg.warmup_updates:
        return (update + 1) / cfg.warmup_updates
    if cfg.schedule == "constant":
        return 1.0
    progress = min(1.0, (update - cfg.warmup_updates) / (cfg.total_updates - cfg.warmup_updates))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def trainable_parameters(objective: nn.Module) -> list[nn.Parameter]:
    """The parameters a UL optimizer may own: momentum targets are excluded by requires_grad=False."""
    return [p for p in objective.parameters() if p.requires_grad]


def make_ul_optimizer(
    objective: nn.Module, cfg: ULOptimConfig = ULOptimConfig(), fast: FastPathConfig | None = None
) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.LambdaLR]:
    """Adam over the objective's trainable parameters and its warm-up + cosine schedule.

    fast: pick the optimizer kernels from this fast path (``fastpath.adam``: fused where available);
    None keeps torch's default implementation.
    """
    params = trainable_parameters(objective)
    if not params:
        raise ValueError(f"{type(objective).__name__} has no trainable parameters (e.g. a random encoder): "
                         "it needs no UL optimizer; skip UL updates instead")
    if cfg.weight_decay > 0:
        groups = [
            {"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ]
        optimizer = adam([g for g in groups if g["params"]], fast, lr=cfg.lr)
    else:
        optimizer = adam(params, fast, lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda u: lr_factor(u, cfg))
    return optimizer, scheduler


def apply_ul_loss(
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    loss: torch.Tensor,
    grad_clip: float,
) -> dict[str, float]:
    """Check the loss, then ``backward_step`` and advance the schedule, for an already computed loss.

    The UL parameters' gradients are zeroed first, so a loss from ``loss_from_features`` (computed
    by an online RL loop) can be applied the same way as one from ``objective.loss``.
    """
    check_loss(objective, loss)
    lr = float(optimizer.param_groups[0]["lr"])  # the rate this update uses, before the schedule advances
    grad_norm = backward_step(objective, optimizer, loss, grad_clip)
    if scheduler is not None:
        scheduler.step()
    return {"ul/grad_norm": float(grad_norm), "ul/lr": lr}


def check_loss(objective: Objective, loss: torch.Tensor) -> None:
    """FloatingPointError if ``loss`` is NaN/inf (reads it: a device sync)."""
    if not torch.isfinite(loss.detach()):
        raise FloatingPointError(
            f"{type(objective).__name__} loss is {loss.item()}: stopping before it corrupts the weights "
            "(check the learning rate, the input scaling and the batch for NaN/inf)"
        )


def backward_step(
    objective: Objective, optimizer: torch.optim.Optimizer, loss: torch.Tensor, grad_clip: float, *,
    sync_free: bool = False,
) -> torch.Tensor:
    """Backward, clip, step and move the momentum targets; returns the gradient norm before clipping.

    sync_free: never read the norm on the host (``clip_gradients``), so the step can be captured as a
    CUDA graph; the schedule is the caller's to advance.
    """
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = clip_gradients(params, grad_clip, sync_free=sync_free)
    optimizer.step()
    objective.after_update()
    return grad_norm


def ul_step(
    objective: Objective,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    batch: PairBatch | SequenceBatch,
    grad_clip: float,
    *,
    fast: FastPathConfig | None = None,
) -> dict[str, float]:
    """One UL update on ``batch``: the objective's metrics plus "ul/grad_norm" and "ul/lr".

    fast: run the loss under this fast path's autocast (bf16 where the device is faster with it);
    None runs it as is. Layout and compilation are set once on the objective by ``prepare_module``.
    """
    context = contextlib.nullcontext() if fast is None else autocast(next(objective.parameters()).device, fast)
    with context:
        loss, metrics = objective.loss(batch)
    return {**metrics, **apply_ul_loss(objective, optimizer, scheduler, loss, grad_clip)}
