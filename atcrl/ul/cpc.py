"""Contrastive Predictive Coding over sequences, with a recurrent context.

Each observation o_t is encoded and compressed to a latent z_t. An LSTM reads z_t together with
the previous action and reward and produces a context c_t, from which one linear map per offset k
predicts z_{t+k}, k = 1..K. Every prediction is scored by InfoNCE against all T·B latents of the
scored window, so the other latents (other times and other sequences) are the negatives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from atcrl.data.batches import SequenceBatch
from atcrl.nets.encoders import ConvEncoder, check_input, kaiming_init
from atcrl.ul.base import SamplingNeed
from atcrl.ul.contrastive import info_nce, masked_mean
from atcrl.ul.inputs import action_features, require_action_dim


@dataclass(frozen=True)
class CPCConfig:
    """CPC hyperparameters; the defaults are the paper's UL-benchmark settings."""

    batch_size: int = 16
    """Sequences per batch (B)."""
    length: int = 32
    """Scored steps per sequence (T), after the burn-in."""
    burn_in: int = 16
    """Leading steps that only warm up the LSTM context: no prediction is made or scored there."""
    max_offset: int | None = None
    """Largest prediction offset K (one linear map per k = 1..K); None = length - 1."""
    latent_size: int = 256
    """Size of the latent z_t = linear(encoder(o_t)) that is predicted and contrasted."""
    rnn_size: int = 256
    """LSTM hidden size (the context c_t)."""
    grad_clip: float = 1000.0
    """Max global gradient norm for this objective's updates (the training loop applies it)."""

    def __post_init__(self) -> None:
        if self.length < 2:
            raise ValueError(f"length must be >= 2 to predict anything, got {self.length}")
        if self.burn_in < 0 or self.batch_size < 1:
            raise ValueError(
                f"burn_in must be >= 0 and batch_size >= 1, got {self.burn_in}, {self.batch_size}"
            )
        if self.max_offset is not None and not 1 <= self.max_offset < self.length:
            raise ValueError(
                f"max_offset must be in [1, length - 1 = {self.length - 1}], got {self.max_offset}"
            )

    @property
    def offsets(self) -> int:
        """K, the number of prediction offsets."""
        return self.max_offset if self.max_offset is not None else self.length - 1


class CPC(nn.Module):
    """CPC around an online encoder; needs the action space for its recurrent context."""

    def __init__(
        self,
        encoder: ConvEncoder,
        cfg: CPCConfig = CPCConfig(),
        *,
        action_dim: int | None = None,
        discrete_actions: bool = False,
    ):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.action_dim = require_action_dim(action_dim, "CPC")
        self.discrete_actions = discrete_actions
        L = cfg.latent_size
        self.compressor = nn.Linear(encoder.feature_dim, L)
        # Context input: latent, previous action, previous reward.
        self.rnn = nn.LSTM(L + self.action_dim + 1, cfg.rnn_size)
        self.predictors = nn.ModuleList(nn.Linear(cfg.rnn_size, L) for _ in range(cfg.offsets))
        kaiming_init(self.compressor)
        kaiming_init(self.predictors)
        self.sampling = SamplingNeed(
            kind="sequences", batch_size=cfg.batch_size, length=cfg.burn_in + cfg.length
        )

    def loss(self, batch: SequenceBatch) -> tuple[torch.Tensor, dict[str, float]]:
        if not isinstance(batch, SequenceBatch):
            raise TypeError(f"CPC needs a SequenceBatch, got {type(batch).__name__}")
        T_all, B = batch.obs.shape[:2]
        s = self.cfg.burn_in
        if T_all < s + 2:
            raise ValueError(f"CPC needs windows of at least burn_in + 2 = {s + 2} steps, got {T_all}")
        check_input(self.encoder, tuple(batch.obs.shape[2:]))
        # A step belongs to the window's episode only if no earlier step left it; contexts and
        # targets past an episode end are never scored nor used as negatives.
        valid = batch.valid.to(torch.long).cumprod(0).bool()

        z = self.compressor(self.encoder(batch.obs.flatten(0, 1)).flatten(1)).view(T_all, B, -1)
        context = self.rnn(torch.cat([z, *self._previous_action_reward(batch, valid)], dim=-1))[0]
        z, context, valid = z[s:], context[s:], valid[s:]

        T = len(z)
        K = min(self.cfg.offsets, T - 1)
        index = torch.arange(T * B, device=z.device).view(T, B)  # position of z[t, b] in the flat candidates
        predictions = torch.cat([self.predictors[k - 1](context[:-k]).flatten(0, 1) for k in range(1, K + 1)])
        labels = torch.cat([index[k:].flatten() for k in range(1, K + 1)])
        # valid is monotone in t, so a valid target at t + k implies its context at t is valid too.
        scored = torch.cat([valid[k:].flatten() for k in range(1, K + 1)])
        per_row, correct = info_nce(predictions @ z.flatten(0, 1).T, labels, col_valid=valid.flatten())
        loss = masked_mean(per_row, scored)

        first = (T - 1) * B  # rows of offset k = 1
        last = (T - K) * B  # rows of offset k = K
        correct = correct.float()
        stats = torch.stack(
            [
                loss.detach(),
                masked_mean(correct, scored),
                masked_mean(correct[:first], scored[:first]),
                masked_mean(correct[-last:], scored[-last:]),
                scored.float().mean(),
            ]
        ).tolist()
        names = ("ul/loss", "ul/accuracy", "ul/accuracy_k1", "ul/accuracy_kmax", "ul/valid_fraction")
        return loss, dict(zip(names, stats))

    def _previous_action_reward(
        self, batch: SequenceBatch, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(a_{t-1}, r_{t-1}) for every step, zeros at t = 0 and after the episode's end."""
        a = action_features(batch.action, 2, self.action_dim, self.discrete_actions, mask=valid)
        r = torch.where(valid, batch.reward.float(), torch.zeros((), device=valid.device))[..., None]
        return _one_step_later(a), _one_step_later(r)

    def after_update(self) -> None:
        """No momentum target: nothing to follow."""


def _one_step_later(x: torch.Tensor) -> torch.Tensor:
    """x[t - 1] at every t along dim 0, zeros at t = 0."""
    return torch.cat([torch.zeros_like(x[:1]), x[:-1]])
