"""The ATC loss as a module for someone else's training loop.

    atc = ATCLoss(encoder, ATCConfig(latent_size=64))
    optimizer = torch.optim.Adam(atc.parameters(), lr=1e-3)       # encoder + ATC heads
    loss, metrics = atc(obs, next_obs, valid)                     # uint8 [B, *in_shape], bool [B]
    optimizer.zero_grad(); loss.backward(); optimizer.step()
    atc.update_target()                                           # momentum encoder follows the online one

It is atcrl's own ATC objective (atcrl.ul.atc.ATC), driven by tensors instead of a replay batch:
the same random-shift augmentation, compressor, residual predictor, bilinear InfoNCE and momentum
target, so its loss on a batch is the loss ``atcrl pretrain`` computes on that batch.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from atcrl.data.batches import PairBatch
from atcrl.pretrained import PretrainedEncoder, as_conv_encoder
from atcrl.ul.atc import ATC, ATCConfig

__all__ = ["ATCLoss"]


class ATCLoss(nn.Module):
    """``loss, metrics = atc(obs, next_obs, valid)``; call ``update_target()`` after each optimizer step.

    encoder: the ConvEncoder to train (shared with an agent if you like), or a PretrainedEncoder
        loaded with ``freeze=False``. ATC trains it in place.
    config: ATC's settings (None = ATCConfig(), the paper's DMC settings). ``batch_size`` and ``delta_t`` are
        not used here: the caller's batch is the contrastive batch (every other row's positive is a
        negative) and ``next_obs`` is the positive.
    """

    def __init__(self, encoder: nn.Module, config: ATCConfig | None = None) -> None:
        super().__init__()
        if isinstance(encoder, PretrainedEncoder) and encoder.frozen:
            raise ValueError("ATCLoss trains its encoder, but this one is frozen: load it with freeze=False")
        self.objective = ATC(as_conv_encoder(encoder), config if config is not None else ATCConfig())

    @property
    def encoder(self) -> nn.Module:
        """The online encoder being trained."""
        return self.objective.encoder

    def forward(
        self, obs: torch.Tensor | np.ndarray, next_obs: torch.Tensor | np.ndarray,
        valid: torch.Tensor | np.ndarray | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """ATC on anchors ``obs`` and positives ``next_obs`` ([B, *in_shape] uint8, at least 2 rows).

        valid: [B] bool, False for rows whose ``next_obs`` does not follow ``obs`` (e.g. across an episode
        reset); those rows are left out of the loss but their positives stay negatives. None = all valid.
        Both inputs are random-shifted independently when ``config.augment`` is on.
        Returns the scalar loss (with its graph) and floats "ul/loss", "ul/accuracy", "ul/valid_fraction".
        """
        device = next(self.objective.encoder.parameters()).device
        anchor, positive = torch.as_tensor(obs, device=device), torch.as_tensor(next_obs, device=device)
        if anchor.shape != positive.shape or anchor.ndim != 4:
            raise ValueError(f"obs and next_obs must both be batches [B, C, H, W], got {tuple(anchor.shape)} "
                             f"and {tuple(positive.shape)}")
        B = anchor.shape[0]
        if B < 2 and self.objective.cfg.similarity == "contrast":
            raise ValueError(f"ATC contrasts the rows of a batch, so it needs at least 2 rows, got {B}")
        if valid is None:
            valid = torch.ones(B, dtype=torch.bool, device=device)
        valid = torch.as_tensor(valid, device=device).bool()
        if valid.shape != (B,):
            raise ValueError(f"valid must have shape [{B}] (one flag per row), got {tuple(valid.shape)}")
        no_actions = torch.zeros(B, 0, device=device)
        task = torch.zeros(B, dtype=torch.long, device=device)
        return self.objective.loss(PairBatch(anchor, positive, valid, no_actions, task))

    def update_target(self) -> None:
        """Move the momentum encoder and compressor towards the online weights (rate ``config.target_tau``)."""
        self.objective.after_update()
