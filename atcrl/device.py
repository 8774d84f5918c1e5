"""Turning a ``--device`` setting into a ``torch.device``, with clear errors for bad input."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(name: str, *, local_rank: int = 0) -> torch.device:
    """"auto" -> CUDA if available else CPU; a bare "cuda" means this process's local GPU.

    ``local_rank`` is the GPU a bare "cuda" picks (torchrun's LOCAL_RANK; 0 outside torchrun).
    Refuses unknown device strings, and CUDA when this torch build sees no GPU, up front rather
    than at the first tensor moved there.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} was asked for, but this torch build sees no CUDA GPU")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device
