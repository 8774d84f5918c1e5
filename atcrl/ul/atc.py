"""Augmented Temporal Contrast (ATC) and its close relatives AC and ATS.

Anchor o_t goes through the online encoder f_θ, the linear compressor g_φ and the residual
predictor p = c + h(c); the positive o_{t+Δt} goes through momentum copies of f and g with no
gradient. Logits p W c̄ᵀ are trained with InfoNCE (label i for row i), so the other positives
in the batch are the negatives. No temperature and no L2 normalisation of the codes.

AC (augmented contrast) is the same module with Δt = 0 and no predictor; ATS replaces the
contrastive loss with a BYOL-style 2 − 2·cos similarity to the momentum target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from atcrl.data.batches import PairBatch
from atcrl.nets.augment import random_shift
from atcrl.nets.encoders import ConvEncoder, check_input, kaiming_init
from atcrl.nets.mlp import ResidualMLP
from atcrl.ul.base import SamplingNeed, frozen_copy, momentum_update
from atcrl.ul.contrastive import info_nce, masked_mean


@dataclass(frozen=True)
class ATCConfig:
    """ATC hyperparameters; the defaults are the paper's DMControl offline-pretraining settings."""

    delta_t: int = 1
    """Time offset between anchor and positive observations (paper: 1 for DMC, 3 for Atari/DMLab)."""
    batch_size: int = 256
    """Anchor/positive pairs per update; every other positive in the batch is a negative."""
    latent_size: int = 128
    """Size L of the code c = g(f(o)) that is contrasted (128 DMC, 256 Atari/DMLab)."""
    predictor_hidden: int = 512
    """Hidden width of the residual predictor p = c + h(c) applied to anchor codes."""
    target_tau: float = 0.01
    """Momentum-encoder update rate: target <- (1 - tau) * target + tau * online.
    1.0 is the "no momentum" ablation: the target is a gradient-free copy of the online weights."""
    shift_pad: int = 4
    """Random-shift padding in pixels (edge mode); shifts are uniform in [-pad, pad]."""
    shift_prob: float = 1.0
    """Probability that a sample is shifted; otherwise it keeps the centre crop (1.0 DMC, 0.1 Atari/DMLab)."""
    augment: bool = True
    """Apply random shift to anchor and positive (independently). False is the no-augmentation ablation."""
    use_predictor: bool = True
    """Residual predictor on the anchor code. False drops it (p = c), as in AC."""
    use_W: bool = True
    """Learned bilinear matrix W in the logits p W c̄ᵀ. False uses the plain dot product p c̄ᵀ."""
    similarity: Literal["contrast", "cosine"] = "contrast"
    """"contrast": InfoNCE over the batch (ATC/AC). "cosine": 2 − 2·cos(p, c̄) per pair, no negatives (ATS)."""
    sampling: Literal["pairs", "sequences"] = "pairs"
    """How the batch's anchors are drawn. "pairs": batch_size independent (t, t + delta_t) pairs (DMC).
    "sequences": batch_size / sequence_length sequences of sequence_length consecutive steps, an anchor at
    every step with its positive delta_t later, so an anchor's negatives include its own sequence's other
    steps (Atari/DMLab: 32 x 16 = 512). Either way each step past an episode end or the write cursor is masked."""
    sequence_length: int = 16
    """Steps per sequence when sampling="sequences" (batch_size must be a multiple); unused for "pairs"."""

    def __post_init__(self) -> None:
        if self.delta_t < 0:
            raise ValueError(f"delta_t must be >= 0, got {self.delta_t}")
        if self.batch_size < 2 and self.similarity == "contrast":
            raise ValueError(f"a contrastive batch needs at least 2 pairs, got batch_size={self.batch_size}")
        if not 0.0 < self.target_tau <= 1.0:
            raise ValueError(f"target_tau must be in (0, 1], got {self.target_tau}")
        if not 0.0 <= self.shift_prob <= 1.0:
            raise ValueError(f"shift_prob must be in [0, 1], got {self.shift_prob}")
        if self.similarity not in ("contrast", "cosine"):
            raise ValueError(f"similarity must be 'contrast' or 'cosine', got {self.similarity!r}")
        if self.sampling not in ("pairs", "sequences"):
            raise ValueError(f"sampling must be 'pairs' or 'sequences', got {self.sampling!r}")
        if self.sampling == "sequences" and (self.sequence_length < 1 or self.batch_size % self.sequence_length):
            raise ValueError(f"sampling='sequences' needs batch_size ({self.batch_size}) to be a multiple of "
                             f"sequence_length ({self.sequence_length}) >= 1")

    @property
    def run(self) -> int:
        """Consecutive anchors per run in the sampled batch (``SamplingNeed.run``)."""
        return self.sequence_length if self.sampling == "sequences" else 1


# Paper settings (docs/reference-settings.md, "Offline pretraining"). Atari/DMLab: 32 sequences x 16 steps,
# an anchor at every step, so an anchor's negatives include its own sequence's other steps.
ATC_PRESETS: dict[str, ATCConfig] = {
    "dmc": ATCConfig(),
    "atari": ATCConfig(delta_t=3, batch_size=512, latent_size=256, shift_prob=0.1, sampling="sequences"),
    "dmlab": ATCConfig(delta_t=3, batch_size=512, latent_size=256, shift_prob=0.1, sampling="sequences"),
}


def ac_config(cfg: ATCConfig = ATCConfig()) -> ATCConfig:
    """AC (augmented contrast): two independent shifts of the same frame, no predictor."""
    return replace(cfg, delta_t=0, use_predictor=False)


def ats_config(cfg: ATCConfig = ATCConfig()) -> ATCConfig:
    """ATS (augmented temporal similarity): BYOL-style cosine loss to the momentum target, no negatives."""
    return replace(cfg, similarity="cosine")


class ATC(nn.Module):
    """The ATC objective around an online encoder (which it trains, and may share with an RL agent)."""

    def __init__(
        self,
        encoder: ConvEncoder,
        cfg: ATCConfig = ATCConfig(),
        *,
        action_dim: int | None = None,
        discrete_actions: bool = False,
    ):
        """action_dim / discrete_actions are unused (ATC needs no actions); every objective takes them."""
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        L = cfg.latent_size
        self.compressor = nn.Linear(encoder.feature_dim, L)
        kaiming_init(self.compressor)
        self.predictor = ResidualMLP(L, cfg.predictor_hidden) if cfg.use_predictor else None
        self.W: nn.Parameter | None = None
        if cfg.use_W and cfg.similarity == "contrast":
            # The default init of an L x L linear layer: uniform in ±1/sqrt(L), so initial logits
            # are of the order of the codes' own dot products.
            self.W = nn.Parameter(torch.empty(L, L))
            nn.init.kaiming_uniform_(self.W, a=math.sqrt(5))
        self.target_encoder = frozen_copy(encoder)
        self.target_compressor = frozen_copy(self.compressor)
        shift = (cfg.shift_pad, cfg.shift_prob) if cfg.augment and cfg.shift_pad and cfg.shift_prob else (0, 0.0)
        self.sampling = SamplingNeed(kind="pairs", batch_size=cfg.batch_size, delta_t=cfg.delta_t, run=cfg.run,
                                     scores_features=True, shift=shift)

    def _augment(self, obs: torch.Tensor) -> torch.Tensor:
        if not self.cfg.augment:
            return obs
        return random_shift(obs, pad=self.cfg.shift_pad, prob=self.cfg.shift_prob)

    def loss(self, batch: PairBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Shift anchor and positive independently, encode, and score the pairs."""
        loss, stats = self.loss_tensors(batch)
        return loss, _floats(stats)

    def loss_tensors(self, batch: PairBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``loss`` with its metrics as 0-d tensors on the device: nothing waits for the device (on a GPU,
        CUDA-graph safe), so a sync-free training step can sum them where they are."""
        check_input(self.encoder, tuple(batch.anchor.shape[1:]))
        anchor = self._augment(batch.anchor)
        positive = self._augment(batch.positive)
        return self.loss_terms(self.encoder(anchor), positive, batch.valid)

    def loss_from_features(
        self, anchor_features: torch.Tensor, positive: torch.Tensor, valid: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``loss_terms`` with its metrics read as floats (one device sync)."""
        loss, stats = self.loss_terms(anchor_features, positive, valid)
        return loss, _floats(stats)

    def loss_terms(
        self, anchor_features: torch.Tensor, positive: torch.Tensor, valid: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss when the caller has already run the online encoder on (augmented) anchors; its
        metrics as 0-d tensors on the device (nothing here waits for the device: CUDA-graph safe).

        anchor_features: ``self.encoder(anchor)`` with its graph, [B, *feature_shape] or [B, D].
        positive: observations at t + Δt, already augmented (no further shift is applied here).
        valid: [B] bool, False where the positive lies past the anchor's episode end (default all valid).
        Online SAC uses this to contrast the critic's shifted obs / next_obs minibatch without
        running the conv on it twice.
        """
        B = anchor_features.shape[0]
        if positive.shape[0] != B:
            raise ValueError(f"{B} anchors but {positive.shape[0]} positives")
        check_input(self.encoder, tuple(positive.shape[1:]))
        if valid is None:
            valid = torch.ones(B, dtype=torch.bool, device=anchor_features.device)
        c = self.compressor(anchor_features.flatten(1))
        p = self.predictor(c) if self.predictor is not None else c
        with torch.no_grad():
            c_target = self.target_compressor(self.target_encoder(positive).flatten(1))
        # Scores in fp32 even under bf16 autocast: logits of tens carry bf16 rounding errors of ~0.1,
        # enough to move the softmax, and this B x L x L + B x B x L head costs little next to the convs.
        with torch.autocast(p.device.type, enabled=False):
            p, c_target = p.float(), c_target.float()
            if self.cfg.similarity == "cosine":
                return self._similarity_loss(p, c_target, valid)
            return self._contrastive_loss(p, c_target, valid)

    def _contrastive_loss(
        self, p: torch.Tensor, c_target: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = (p @ self.W if self.W is not None else p) @ c_target.T
        logits = logits - logits.max(dim=1, keepdim=True).values.detach()  # stability; CE is shift-invariant
        labels = torch.arange(len(logits), device=logits.device)
        # Rows whose positive lies past an episode end are masked, not dropped: the batch keeps its
        # shape, and their (clamped, still real) positives remain negatives for every other row, so
        # no column mask is passed.
        per_row, correct = info_nce(logits, labels)
        return self._reduce(per_row, correct, valid)

    def _similarity_loss(
        self, p: torch.Tensor, c_target: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p_n, t_n = F.normalize(p, dim=1), F.normalize(c_target, dim=1)
        per_row = 2 - 2 * (p_n * t_n).sum(dim=1)
        # No negatives enter the loss; accuracy (nearest target by cosine) is logged for comparison.
        sim = p_n.detach() @ t_n.T
        correct = sim.argmax(dim=1) == torch.arange(len(sim), device=sim.device)
        return self._reduce(per_row, correct, valid)

    @staticmethod
    def _reduce(
        per_row: torch.Tensor, correct: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Means over valid rows only (an all-invalid batch gives loss 0 and accuracy 0)."""
        loss = masked_mean(per_row, valid)
        accuracy = masked_mean(correct.to(per_row.dtype), valid)
        return loss, {"ul/loss": loss.detach(), "ul/accuracy": accuracy, "ul/valid_fraction": valid.to(per_row.dtype).mean()}

    @torch.no_grad()
    def after_update(self) -> None:
        """Move the momentum target encoder and compressor towards the online weights."""
        momentum_update(self.target_encoder, self.encoder, self.cfg.target_tau)
        momentum_update(self.target_compressor, self.compressor, self.cfg.target_tau)


def _floats(stats: dict[str, torch.Tensor]) -> dict[str, float]:
    """0-d metric tensors read as floats in one device sync."""
    return dict(zip(stats, torch.stack(list(stats.values())).tolist()))
