"""Variational auto-encoder that reconstructs o_{t+Δ} from o_t (plus the actions in between).

o_t -> encoder -> linear -> (μ, log σ²) -> z = μ + σ·ε -> [z, a_t..a_{t+Δ-1}] -> linear -> a
transposed-conv mirror of the encoder -> Bernoulli logits for every pixel of o_{t+Δ} (all stacked
frames). Loss: binary cross-entropy on [0, 1] pixels (summed over pixels, averaged over channels)
plus the KL divergence to N(0, I). Δ = 0 is the plain VAE; Δ > 0 the temporal variant. The actions
join the sampled latent, not the encoder's input, so the encoder is not asked to carry them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from atcrl.data.batches import PairBatch
from atcrl.nets.encoders import ConvEncoder, check_input, kaiming_init
from atcrl.ul.base import SamplingNeed
from atcrl.ul.contrastive import masked_mean
from atcrl.ul.inputs import action_features, require_action_dim, to_unit


@dataclass(frozen=True)
class VAEConfig:
    """VAE hyperparameters; the defaults are the paper's UL-benchmark settings (Δ = 0)."""

    delta_t: int = 0
    """Reconstruct o_{t+delta_t} from o_t (paper: 0, 1 or 3); > 0 also feeds the decoder the actions
    a_t..a_{t+delta_t-1}."""
    batch_size: int = 128
    """Observations per batch."""
    latent_size: int = 128
    """Size of the stochastic latent z."""
    kl_coeff: float = 1.0
    """Weight of the KL term."""
    grad_clip: float = 10.0
    """Max global gradient norm for this objective's updates (the training loop applies it)."""

    def __post_init__(self) -> None:
        if self.delta_t < 0 or self.batch_size < 1 or self.latent_size < 1:
            raise ValueError(
                "delta_t must be >= 0, batch_size and latent_size >= 1, got "
                f"{self.delta_t}, {self.batch_size}, {self.latent_size}"
            )


def mirrored_decoder(encoder: ConvEncoder) -> nn.Sequential:
    """Transposed convs undoing the encoder's convs in reverse: feature map -> logits at the input's shape.

    output_padding makes each layer land exactly on the shape its conv started from (a strided conv
    maps several input sizes to one output size). ReLU between layers, none after the last.
    """
    shapes = [encoder.in_shape]
    for conv in encoder.convs:
        _, h, w = shapes[-1]
        (k_h, k_w), (s_h, s_w), (p_h, p_w) = conv.kernel_size, conv.stride, conv.padding
        shapes.append((conv.out_channels, (h + 2 * p_h - k_h) // s_h + 1, (w + 2 * p_w - k_w) // s_w + 1))
    layers: list[nn.Module] = []
    for i in reversed(range(len(encoder.convs))):
        conv = encoder.convs[i]
        (c_out, h_out, w_out), (c_in, h_in, w_in) = shapes[i], shapes[i + 1]
        (k_h, k_w), (s_h, s_w), (p_h, p_w) = conv.kernel_size, conv.stride, conv.padding
        pad = (h_out - ((h_in - 1) * s_h - 2 * p_h + k_h), w_out - ((w_in - 1) * s_w - 2 * p_w + k_w))
        layers.append(
            nn.ConvTranspose2d(c_in, c_out, conv.kernel_size, conv.stride, conv.padding, output_padding=pad)
        )
        if i > 0:
            layers.append(nn.ReLU())
    decoder = nn.Sequential(*layers)
    kaiming_init(decoder)
    return decoder


class VAE(nn.Module):
    """VAE around an online encoder; with delta_t > 0 it needs the action space."""

    def __init__(
        self,
        encoder: ConvEncoder,
        cfg: VAEConfig = VAEConfig(),
        *,
        action_dim: int | None = None,
        discrete_actions: bool = False,
    ):
        super().__init__()
        self.cfg = cfg
        self.encoder = encoder
        self.discrete_actions = discrete_actions
        self.action_dim = require_action_dim(action_dim, "a VAE with delta_t > 0") if cfg.delta_t > 0 else 0
        L = cfg.latent_size
        self.posterior = nn.Linear(encoder.feature_dim, 2 * L)
        self.expand = nn.Linear(L + cfg.delta_t * self.action_dim, encoder.feature_dim)
        kaiming_init(self.posterior)
        kaiming_init(self.expand)
        self.decoder = mirrored_decoder(encoder)
        self.sampling = SamplingNeed(kind="pairs", batch_size=cfg.batch_size, delta_t=cfg.delta_t)

    def loss(self, batch: PairBatch) -> tuple[torch.Tensor, dict[str, float]]:
        if not isinstance(batch, PairBatch):
            raise TypeError(f"the VAE needs a PairBatch, got {type(batch).__name__}")
        check_input(self.encoder, tuple(batch.anchor.shape[1:]))
        if batch.actions.shape[1] != self.cfg.delta_t:
            raise ValueError(
                f"the batch has pairs {batch.actions.shape[1]} steps apart, the VAE was "
                f"configured for delta_t={self.cfg.delta_t}"
            )
        B = batch.anchor.shape[0]
        mu, logvar = self.posterior(self.encoder(batch.anchor).flatten(1)).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        if self.cfg.delta_t > 0:
            steps_valid = batch.valid[:, None].expand(B, self.cfg.delta_t)
            a = action_features(batch.actions, 2, self.action_dim, self.discrete_actions, mask=steps_valid)
            z = torch.cat([z, a.flatten(1)], dim=1)
        h = torch.relu(self.expand(z)).view(B, *self.encoder.feature_shape)
        logits = self.decoder(h)

        target = to_unit(batch.positive)
        recon = F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum((2, 3)).mean(1)
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)
        # Pairs whose o_{t+Δ} lies past the episode end have no target: not scored.
        valid = batch.valid
        recon_loss, kl_loss = masked_mean(recon, valid), masked_mean(kl, valid)
        loss = recon_loss + self.cfg.kl_coeff * kl_loss
        names = ("ul/loss", "ul/recon_loss", "ul/kl", "ul/valid_fraction")
        values = torch.stack([loss.detach(), recon_loss.detach(), kl_loss.detach(), valid.float().mean()])
        return loss, dict(zip(names, values.tolist()))

    def after_update(self) -> None:
        """No momentum target: nothing to follow."""
