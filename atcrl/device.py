"""Turning a ``--device`` setting into a ``torch.device``, with clear errors for bad input; staging host
arrays for asynchronous copies to it."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["Staging", "resolve_device"]


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


class Staging:
    """Host arrays to a device through one reused page-locked buffer per shape and dtype.

    From pageable memory a CUDA host-to-device copy first waits for the stream's queued work (the update
    just launched), so an env step could never overlap it; from page-locked memory the copy is queued like
    any kernel. One buffer per shape is reused, which is safe when the caller reads a result back between
    two copies of that shape (the SAC loop reads each action back before the next observation arrives).
    Elsewhere (a CPU device), and for tensors already on the device, nothing is copied.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self._buffers: dict[tuple[tuple[int, ...], torch.dtype], torch.Tensor] = {}

    def __call__(self, array: Any) -> torch.Tensor:
        host = torch.as_tensor(array)
        if self.device.type != "cuda" or host.device == self.device:
            return host.to(self.device)
        key = (tuple(host.shape), host.dtype)
        if key not in self._buffers:
            self._buffers[key] = torch.empty(key[0], dtype=key[1]).pin_memory()
        buffer = self._buffers[key]
        buffer.copy_(host)
        return buffer.to(self.device, non_blocking=True)
