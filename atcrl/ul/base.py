"""What every unsupervised objective promises, and the pieces they share.

An objective is an ``nn.Module`` that holds the online encoder it trains (``.encoder``) plus
its own heads, declares what it needs from the replay (``.sampling``), and turns one batch into
a loss and named metrics. Training loops own the optimizer; after each optimizer step they call
``after_update()`` so objectives with momentum targets can follow the online weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import torch

from atcrl.data.batches import PairBatch, SequenceBatch
from atcrl.nets.encoders import ConvEncoder

# Moved to atcrl.nets.target (agents use them too); re-exported for existing importers.
from atcrl.nets.target import frozen_copy, momentum_update

__all__ = ["Objective", "SamplingNeed", "frozen_copy", "momentum_update"]


@dataclass(frozen=True)
class SamplingNeed:
    """What an objective samples from the replay for one update."""

    kind: Literal["pairs", "sequences"]
    """"pairs": (o_t, o_{t+delta_t}) PairBatch; "sequences": time-major SequenceBatch windows."""
    batch_size: int
    """Pairs per batch, or sequences per batch (B)."""
    delta_t: int = 0
    """Offset of the positive for "pairs" (0 = the same observation)."""
    length: int = 0
    """Window length T for "sequences"."""
    run: int = 1
    """For "pairs": anchors come in runs of this many consecutive observations (``batch_size`` a multiple of
    it), so an anchor's negatives include its own run's other steps (sequence sampling: 32 runs x 16 = 512);
    1 = independent anchors."""
    scores_features: bool = False
    """The objective can score anchor features a caller already computed: ``loss_terms(features, positive,
    valid)``, metrics as device tensors. An RL loop whose minibatch is this objective's own batch may then
    share its conv forward pass (online SAC + ATC: the critic's shifted obs / next obs)."""
    shift: tuple[int, float] = (0, 0.0)
    """The random shift (pad, probability) the objective applies to anchor and positive alike; (0, 0.0) =
    none. A loop reuses its own shifted minibatch only when its shift is exactly this one."""


@runtime_checkable
class Objective(Protocol):
    encoder: ConvEncoder
    sampling: SamplingNeed

    def loss(self, batch: PairBatch | SequenceBatch) -> tuple[torch.Tensor, dict[str, float]]: ...

    def after_update(self) -> None: ...

    def parameters(self, recurse: bool = True): ...
