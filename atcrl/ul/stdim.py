"""Spatio-Temporal Deep InfoMax (ST-DIM) with a momentum encoder for the positives.

Anchors o_t and positives o_{t+Δt} are contrasted cell by cell on one conv layer's feature map
(the "local" cells). Global-local: the anchor's global code predicts each positive cell.
Local-local: each anchor cell predicts the positive cell at the same location. At every location
the other positives in the batch are the negatives. Positives come from a momentum copy of the
encoder (no gradient). No augmentation.

Which layer: the paper's text names the first conv layer, so ``local_layer=0`` is the default;
any layer can be chosen (``-1`` = the encoder's final feature map, which is far cheaper on 84×84
inputs: 7×7 cells instead of 41×41 for the DMC encoder).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from atcrl.data.batches import PairBatch
from atcrl.nets.encoders import ConvEncoder, check_input, kaiming_init
from atcrl.nets.mlp import ResidualMLP
from atcrl.nets.target import frozen_copy, momentum_update
from atcrl.ul.base import SamplingNeed
from atcrl.ul.contrastive import info_nce, masked_mean


@dataclass(frozen=True)
class STDIMConfig:
    """ST-DIM hyperparameters; the defaults are the paper's UL-benchmark settings."""

    delta_t: int = 3
    """Time offset between anchor and positive observations."""
    batch_size: int = 64
    """Pairs per batch; at every location the other positives are the negatives."""
    local_layer: int = 0
    """Index of the conv layer whose output cells are contrasted (0 = first layer, -1 = last)."""
    latent_size: int = 256
    """Size of the anchor's global code (linear compression of the final feature map)."""
    predictor_hidden: int = 512
    """Hidden width of the residual MLPs applied to the anchor's global code and to its cells."""
    target_tau: float = 0.01
    """Momentum-encoder update rate: target <- (1 - tau) * target + tau * online."""
    global_local: bool = True
    """Use the global-local term (anchor code vs positive cells)."""
    local_local: bool = True
    """Use the local-local term (anchor cell vs positive cell at the same location)."""
    grad_clip: float = 10.0
    """Max global gradient norm for this objective's updates (the training loop applies it)."""

    def __post_init__(self) -> None:
        if self.delta_t < 0:
            raise ValueError(f"delta_t must be >= 0, got {self.delta_t}")
        if self.batch_size < 2:
            raise ValueError(f"a contrastive batch needs at least 2 pairs, got batch_size={self.batch_size}")
        if not 0.0 < self.target_tau <= 1.0:
            raise ValueError(f"target_tau must be in (0, 1], got {self.target_tau}")
        if not (self.global_local or self.local_local):
            raise ValueError("enable at least one of global_local and local_local")


def conv_layer_outputs(encoder: ConvEncoder, obs: torch.Tensor) -> list[torch.Tensor]:
    """The (post-ReLU, post-skip) output of every conv layer of ``encoder``; the last equals encoder(obs)."""
    x = obs.float().div(255.0) if obs.dtype == torch.uint8 else obs
    outputs = []
    for conv, residual in zip(encoder.convs, encoder.residual):
        y = torch.relu(conv(x))
        x = x + y if residual else y
        outputs.append(x)
    return outputs


class STDIM(nn.Module):
    """ST-DIM around an online encoder, with its own momentum target encoder."""

    def __init__(
        self,
        encoder: ConvEncoder,
        cfg: STDIMConfig = STDIMConfig(),
        *,
        action_dim: int | None = None,
        discrete_actions: bool = False,
    ):
        """``action_dim`` / ``discrete_actions`` are accepted for a uniform signature and unused."""
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        n_layers = len(encoder.convs)
        if not -n_layers <= cfg.local_layer < n_layers:
            raise ValueError(
                f"local_layer={cfg.local_layer} but the {encoder.arch} encoder has {n_layers} conv layers"
            )
        self.layer = cfg.local_layer % n_layers
        C = encoder.convs[self.layer].out_channels
        L = cfg.latent_size
        self.compressor = nn.Linear(encoder.feature_dim, L)
        kaiming_init(self.compressor)
        if cfg.global_local:
            self.gl_predictor = ResidualMLP(L, cfg.predictor_hidden)
            self.gl_W = nn.Linear(L, C, bias=False)
        if cfg.local_local:
            self.ll_predictor = ResidualMLP(C, cfg.predictor_hidden)
            self.ll_W = nn.Linear(C, C, bias=False)
        self.target_encoder = frozen_copy(encoder)
        self.sampling = SamplingNeed(kind="pairs", batch_size=cfg.batch_size, delta_t=cfg.delta_t)

    def loss(self, batch: PairBatch) -> tuple[torch.Tensor, dict[str, float]]:
        if not isinstance(batch, PairBatch):
            raise TypeError(f"ST-DIM needs a PairBatch, got {type(batch).__name__}")
        check_input(self.encoder, tuple(batch.anchor.shape[1:]))
        B = batch.anchor.shape[0]
        layers = conv_layer_outputs(self.encoder, batch.anchor)
        with torch.no_grad():
            positive = conv_layer_outputs(self.target_encoder, batch.positive)[self.layer]
        positive = positive.flatten(2)  # [B, C, P] with P cells
        P = positive.shape[-1]
        labels = torch.arange(B, device=positive.device).expand(P, B)
        # Pairs whose positive lies past an episode end are not scored; their positive (the
        # episode's last frame, a real observation) still serves as a negative for the others.
        rows = batch.valid.to(positive.device).expand(P, B)

        terms: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if self.cfg.global_local:
            code = self.gl_W(self.gl_predictor(self.compressor(layers[-1].flatten(1))))  # [B, C]
            terms["gl"] = info_nce(torch.einsum("ic,jcp->pij", code, positive), labels)
        if self.cfg.local_local:
            cells = layers[self.layer].flatten(2).permute(2, 0, 1)  # [P, B, C]
            query = self.ll_W(self.ll_predictor(cells))
            terms["ll"] = info_nce(torch.einsum("pic,jcp->pij", query, positive), labels)

        losses = {k: masked_mean(per_row, rows) for k, (per_row, _) in terms.items()}
        loss = sum(losses.values())
        names, values = ["ul/loss", "ul/valid_fraction"], [loss.detach(), batch.valid.float().mean()]
        for k, (_, correct) in terms.items():
            names += [f"ul/{k}_loss", f"ul/{k}_accuracy"]
            values += [losses[k].detach(), masked_mean(correct.float(), rows)]
        return loss, dict(zip(names, torch.stack([v.to(loss.device) for v in values]).tolist()))

    @torch.no_grad()
    def after_update(self) -> None:
        """Move the momentum target encoder towards the online weights."""
        momentum_update(self.target_encoder, self.encoder, self.cfg.target_tau)
