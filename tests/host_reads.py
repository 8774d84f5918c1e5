"""A guard for the sync-free steps' tests: inside it, reading a tensor's value on the host raises."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def no_host_reads():
    """Any read of a tensor's value on the host (what is a device sync on a GPU) raises inside."""
    names = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__")
    saved = {n: getattr(torch.Tensor, n) for n in names}

    def refuse(name):
        def read(self, *args, **kwargs):
            raise AssertionError(f"host read Tensor.{name} inside a sync-free step")
        return read

    for n in names:
        setattr(torch.Tensor, n, refuse(n))
    try:
        yield
    finally:
        for n, f in saved.items():
            setattr(torch.Tensor, n, f)
