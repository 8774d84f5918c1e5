"""Slow-moving target copies of a network, shared by agents (target critics) and UL objectives.

A target starts as a gradient-free copy of its source and then follows it by an exponential
moving average after each optimizer step.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["frozen_copy", "momentum_update"]


@torch.no_grad()
def momentum_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """target <- (1 - tau) * target + tau * online, for parameters and float buffers."""
    for t, o in zip(target.parameters(), online.parameters()):
        t.lerp_(o, tau)
    for t, o in zip(target.buffers(), online.buffers()):
        if t.is_floating_point():
            t.lerp_(o, tau)
        else:
            t.copy_(o)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy with gradients switched off (a momentum target starts equal to its source)."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target
