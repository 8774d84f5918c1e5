"""How an agent's conv encoder is trained: the one switch the paper's three settings hang on."""

from __future__ import annotations

import enum

import torch


class EncoderMode(str, enum.Enum):
    end_to_end = "end_to_end"
    """The RL loss trains the encoder (with random-shift augmentation): the RAD-style baseline."""
    decoupled = "decoupled"
    """Only an unsupervised objective (ATC by default) trains the encoder; RL sees detached features."""
    frozen = "frozen"
    """A pretrained encoder is loaded and never changes; the replay may cache its latent outputs."""


def rl_features(features: torch.Tensor, mode: EncoderMode) -> torch.Tensor:
    """The features an RL loss may backpropagate through: only end-to-end lets gradients reach the conv."""
    if mode is EncoderMode.end_to_end:
        return features
    return features.detach()  # decoupled / frozen: RL never trains the encoder
