"""Data-parallel training under torchrun: process group, DDP wrapper, metric averaging.

Outside torchrun (WORLD_SIZE unset or 1) everything here is a no-op, so one training loop serves
both. gloo is used on CPU, nccl on CUDA.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from atcrl.data.batches import PairBatch, SequenceBatch
from atcrl.ul.base import Objective

__all__ = ["Dist", "average_metrics", "init_distributed", "wrap_for_ddp"]


@dataclass(frozen=True)
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False
    """True when this module initialised the process group (and so destroys it)."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()

    def close(self) -> None:
        if self.owns_group:
            torch.distributed.destroy_process_group()


def init_distributed(device_type: str) -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist()
    owns = not torch.distributed.is_initialized()
    if owns:
        torch.distributed.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return Dist(torch.distributed.get_rank(), torch.distributed.get_world_size(),
                int(os.environ.get("LOCAL_RANK", "0")), owns)


class _LossModule(nn.Module):
    """The objective's loss as a forward pass: DDP arms its gradient averaging in forward()."""

    def __init__(self, objective: Objective, loss: Callable[[PairBatch | SequenceBatch], Any]) -> None:
        super().__init__()
        self.objective = objective
        self.loss = loss

    def forward(self, batch: PairBatch | SequenceBatch) -> tuple[torch.Tensor, dict[str, Any]]:
        return self.loss(batch)


def wrap_for_ddp(
    objective: Objective, dist: Dist, device: torch.device,
    loss: Callable[[PairBatch | SequenceBatch], tuple[torch.Tensor, dict[str, Any]]] | None = None,
) -> Callable[[PairBatch | SequenceBatch], tuple[torch.Tensor, dict[str, Any]]]:
    """``batch -> (loss, metrics)``; under DDP, backward of that loss averages gradients over ranks.

    loss: which of the objective's loss methods to run (e.g. one with device-tensor metrics); None = ``loss``."""
    loss = objective.loss if loss is None else loss
    if dist.world_size == 1:
        return loss
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(_LossModule(objective, loss),
                                   device_ids=[device.index] if device.type == "cuda" else None)


def average_metrics(metrics: dict[str, float], dist: Dist, device: torch.device) -> dict[str, float]:
    """Mean of each metric over ranks (every rank must call this at the same update)."""
    if dist.world_size == 1:
        return metrics
    keys = sorted(metrics)
    values = torch.tensor([metrics[k] for k in keys], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(values)
    return dict(zip(keys, (values / dist.world_size).tolist()))
