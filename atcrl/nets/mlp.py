"""Small MLP builders shared by UL heads and RL heads."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import nn

from atcrl.nets.encoders import kaiming_init


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, *, init: str = "kaiming") -> nn.Sequential:
    """Linear layers with ReLU between them; ``init`` is "kaiming" (zero biases) or "orthogonal"."""
    dims = [in_dim, *hidden, out_dim]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(pairwise(dims)):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    net = nn.Sequential(*layers)
    if init == "orthogonal":
        for m in net:
            if isinstance(m, nn.Linear):
                nn.init.orthogonal_(m.weight)
                nn.init.zeros_(m.bias)
    elif init == "kaiming":
        kaiming_init(net)
    else:
        raise ValueError(f"unknown init {init!r}: use 'kaiming' or 'orthogonal'")
    return net


class ResidualMLP(nn.Module):
    """x + h(x) with one hidden layer: ATC's anchor predictor p = c + h(c)."""

    def __init__(self, dim: int, hidden: int = 512):
        super().__init__()
        self.net = mlp(dim, [hidden], dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)
