"""One offline UL update as a step whose metrics stay on the device (what ``atcrl pretrain`` runs per update).

    seed     = torch and numpy seeded from (seed, rank, update)      (outside the step: a resume draws the same)
    batch    = pair or sequence batch; on the device with device_data (no host gather, no copy)
    loss     = the objective on its augmented batch, metrics as device tensors where it has them (ATC family)
    step     = backward, gradient clip, Adam step, momentum targets  (``backward_step``, sync-free)
    meter   += every metric

Nothing in that list waits for the device where the data is on it, so the loop reads the metrics once per
log interval (``read``) and once before every checkpoint (``check_finite``). With ``FastPathConfig.cuda_graph``
on CUDA it runs as one captured CUDA graph (``atcrl.train.captured``): the torch seed set before each replay
is what the graph's random numbers (anchors, shifts) are drawn from, and the learning rate is a device tensor
the schedule writes in place, outside the graph. On the CPU a NaN/inf loss still stops the run before its
optimizer step; under capture it is caught when the metrics are read, before any checkpoint is written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from atcrl.fastpath import FastPathConfig, autocast, captures
from atcrl.train.captured import Captured
from atcrl.ul.base import Objective
from atcrl.ul.optim import ULOptimConfig, backward_step, check_loss, lr_factor

__all__ = ["PretrainStep", "tensor_loss"]


def tensor_loss(objective: Objective) -> Callable[[Any], tuple[torch.Tensor, dict[str, Any]]]:
    """The objective's loss with device-tensor metrics where it has one (``loss_tensors``), else ``loss``
    (float metrics: one device sync per update, and no capture)."""
    return getattr(objective, "loss_tensors", objective.loss)


class PretrainStep:
    """The run's update step: ``step(update)`` once per update; ``read`` the metrics once per interval.

    A captured step points at the optimizer states it was captured with: after a restore make a new one
    (``atcrl pretrain`` restores before it makes its step).

    seed(update) seeds the update's random streams and returns its numpy generator (it runs before every
    call, replays included); draw(rng) returns the update's batch on the device; forward(batch) returns
    (loss, metrics), e.g. ``tensor_loss(objective)`` or its DDP wrapper.
    """

    def __init__(self, objective: Objective, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, optim: ULOptimConfig, grad_clip: float, *,
                 seed: Callable[[int], np.random.Generator], draw: Callable[[np.random.Generator], Any],
                 forward: Callable[[Any], tuple[torch.Tensor, dict[str, Any]]], fast: FastPathConfig,
                 device: torch.device):
        self.objective, self.optimizer, self.scheduler = objective, optimizer, scheduler
        self.optim, self.grad_clip = optim, grad_clip
        self.seed, self.draw, self.forward, self.fast = seed, draw, forward, fast
        self.device = torch.device(device)
        self.runner = Captured(self.device, captures(fast, self.device))
        self.meter = self.runner.meter
        # On the CPU every check is free, so a NaN/inf stops the run before its optimizer step.
        self.check = self.device.type == "cpu"
        self._rng: np.random.Generator | None = None

    @property
    def capture(self) -> bool:
        return self.runner.capture

    def __call__(self, update: int) -> None:
        self._rng = self.seed(update)
        lr = self.optim.lr * lr_factor(self.scheduler.last_epoch, self.optim)  # the rate this update uses
        self.runner(0, self._body)
        self.scheduler.step()  # writes a capturable optimizer's device-tensor rate in place
        self.meter.add_host("ul/lr", lr)

    def _body(self) -> list[str]:
        batch = self.draw(self._rng)
        with autocast(self.device, self.fast):
            loss, metrics = self.forward(batch)
        if self.check:
            check_loss(self.objective, loss)
        # On the CPU the norm is read for free, which skips the clip's multiply by 1 when within bounds.
        grad_norm = backward_step(self.objective, self.optimizer, loss, self.grad_clip, sync_free=not self.check)
        return self.meter.add({**metrics, "ul/grad_norm": grad_norm})

    def read(self) -> dict[str, float]:
        """Interval means of the step's metrics (one sync); FloatingPointError if one is NaN/inf."""
        return self.meter.read()

    def check_finite(self) -> None:
        """Before a checkpoint: FloatingPointError if a metric so far is NaN/inf (needed only without checks)."""
        if not self.check:
            self.meter.check_finite()
