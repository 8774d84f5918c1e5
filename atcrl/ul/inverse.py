"""Inverse dynamics: predict the actions a_t..a_{t+Δ-1} from the features of o_t and o_{t+Δ}.

Discrete actions: cross-entropy for each of the Δ actions minus an entropy bonus (loss = CE − c·H),
which keeps the predicted distributions from collapsing early. Continuous actions: mean squared
error on the action vectors (no entropy term: there is no distribution to keep spread out).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from atcrl.data.batches import PairBatch
from atcrl.nets.encoders import ConvEncoder, check_input
from atcrl.nets.mlp import mlp
from atcrl.ul.base import SamplingNeed
from atcrl.ul.contrastive import masked_mean
from atcrl.ul.inputs import action_features, action_indices, require_action_dim


@dataclass(frozen=True)
class InverseConfig:
    """Inverse-model hyperparameters; the defaults are the paper's UL-benchmark settings."""

    delta_t: int = 3
    """Offset Δ between the two observations; the model predicts the Δ actions in between."""
    batch_size: int = 256
    """Observation pairs per batch."""
    hidden: int = 512
    """Hidden width of the MLP on the concatenated features."""
    entropy_coeff: float = 0.01
    """Entropy bonus c for discrete actions: loss = cross-entropy − c · entropy."""
    grad_clip: float = 10.0
    """Max global gradient norm for this objective's updates (the training loop applies it)."""

    def __post_init__(self) -> None:
        if self.delta_t < 1:
            raise ValueError(
                f"an inverse model needs delta_t >= 1 (actions between the frames), got {self.delta_t}"
            )
        if self.batch_size < 1 or self.hidden < 1:
            raise ValueError(f"batch_size and hidden must be >= 1, got {self.batch_size}, {self.hidden}")


class InverseModel(nn.Module):
    """Inverse dynamics around an online encoder; needs the action space."""

    def __init__(
        self,
        encoder: ConvEncoder,
        cfg: InverseConfig = InverseConfig(),
        *,
        action_dim: int | None = None,
        discrete_actions: bool = False,
    ):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.action_dim = require_action_dim(action_dim, "the inverse model")
        self.discrete_actions = discrete_actions
        self.head = mlp(2 * encoder.feature_dim, [cfg.hidden], cfg.delta_t * self.action_dim)
        self.sampling = SamplingNeed(kind="pairs", batch_size=cfg.batch_size, delta_t=cfg.delta_t)

    def loss(self, batch: PairBatch) -> tuple[torch.Tensor, dict[str, float]]:
        if not isinstance(batch, PairBatch):
            raise TypeError(f"the inverse model needs a PairBatch, got {type(batch).__name__}")
        check_input(self.encoder, tuple(batch.anchor.shape[1:]))
        B, D = batch.anchor.shape[0], self.cfg.delta_t
        if batch.actions.shape[1] != D:
            raise ValueError(
                f"the batch has pairs {batch.actions.shape[1]} steps apart, the inverse model "
                f"was configured for delta_t={D}"
            )
        features = self.encoder(torch.cat([batch.anchor, batch.positive])).flatten(1)
        out = self.head(torch.cat(features.chunk(2), dim=1)).view(B, D, self.action_dim)
        # A pair whose o_{t+Δ} lies past the episode end has no (complete) action sequence: not scored.
        steps = batch.valid[:, None].expand(B, D)
        if self.discrete_actions:
            labels = action_indices(batch.actions, self.action_dim, steps)
            log_p = F.log_softmax(out, dim=-1)
            ce = -log_p.gather(-1, labels[..., None]).squeeze(-1)
            entropy = -(log_p.exp() * log_p).sum(-1)
            cross_entropy, mean_entropy = masked_mean(ce, steps), masked_mean(entropy, steps)
            loss = cross_entropy - self.cfg.entropy_coeff * mean_entropy
            accuracy = masked_mean((out.detach().argmax(-1) == labels).float(), steps)
            names = ("ul/loss", "ul/cross_entropy", "ul/entropy", "ul/accuracy")
            values = [loss, cross_entropy, mean_entropy, accuracy]
        else:
            target = action_features(batch.actions, 2, self.action_dim, False, mask=steps)
            loss = masked_mean((out - target).pow(2).mean(-1), steps)
            names, values = ("ul/loss",), [loss]
        names += ("ul/valid_fraction",)
        values.append(batch.valid.float().mean())
        return loss, dict(zip(names, torch.stack([v.detach() for v in values]).tolist()))

    def after_update(self) -> None:
        """No momentum target: nothing to follow."""
