"""The random-encoder baseline: an objective that never trains its encoder.

It has no trainable parameters at all (the encoder's are switched off), which is the one signal a
training loop needs: ``make_ul_optimizer`` refuses an objective without trainable parameters, and
the loop then skips UL updates. ``loss`` still answers like any objective (a constant zero with no
graph) so evaluation and logging code need no special case. Exporting its encoder exports the
Kaiming-normal initial weights; with ``seed`` set they depend on nothing but that seed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from atcrl.data.batches import PairBatch, SequenceBatch
from atcrl.nets.encoders import ConvEncoder, kaiming_init
from atcrl.ul.base import SamplingNeed


@dataclass(frozen=True)
class RandomEncoderConfig:
    """The untrained-encoder baseline."""

    seed: int | None = None
    """Re-draw the encoder's Kaiming-normal weights from this seed (on the CPU, so every device gets
    the same weights); None keeps the weights the encoder was built with."""


class RandomEncoder(nn.Module):
    """Holds an encoder frozen at its (Kaiming-normal) initialisation."""

    def __init__(
        self,
        encoder: ConvEncoder,
        cfg: RandomEncoderConfig = RandomEncoderConfig(),
        *,
        action_dim: int | None = None,
        discrete_actions: bool = False,
    ):
        """``action_dim`` / ``discrete_actions`` are accepted for a uniform signature and unused."""
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        if cfg.seed is not None:
            encoder.load_state_dict(seeded_init(encoder, cfg.seed))
        encoder.requires_grad_(False)
        # Nothing is ever sampled for it; the smallest valid request keeps generic loops working.
        self.sampling = SamplingNeed(kind="pairs", batch_size=1)

    def loss(self, batch: PairBatch | SequenceBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """A constant zero (no graph: there is nothing to train) and the usual loss metric."""
        device = next(self.encoder.parameters()).device
        return torch.zeros((), device=device), {"ul/loss": 0.0}

    def after_update(self) -> None:
        """Nothing to follow."""


def seeded_init(encoder: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The state dict of ``encoder`` re-initialised (Kaiming normal, zero biases) from ``seed`` on the CPU."""
    fresh = copy.deepcopy(encoder).cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        kaiming_init(fresh)
    return fresh.state_dict()
