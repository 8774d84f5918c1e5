"""Online UL for the RL loops: an objective training the agent's own conv from the agent's own replay(s).

Both loops use it the same way: ``build_objective`` puts a registry objective around the agent's
conv (and refuses one that would train another conv); ``OnlineUL`` owns its optimizer and schedule,
samples what the objective asks for (pairs or sequences, an equal share from every replay: SAC has
one, PPO one per env), runs its updates on the fast path, and reads and writes its part of a run's
checkpoint state.

Checkpoint layout (a run's state): ``"objective"`` holds the objective's weights (momentum targets
included) and ``"ul"`` holds {"optimizer", "scheduler", "updates"}.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from atcrl.data.batches import PairBatch, SequenceBatch, concat
from atcrl.data.device_replay import DeviceReplay
from atcrl.data.replay import Replay
from atcrl.fastpath import FastPathConfig
from atcrl.nets.encoders import ConvEncoder
from atcrl.ul.base import Objective
from atcrl.ul.optim import (
    ULOptimConfig,
    backward_step,
    check_loss,
    lr_factor,
    make_ul_optimizer,
    objective_grad_clip,
    ul_step,
)

__all__ = ["OnlineUL", "build_objective"]


def build_objective(
    name: str, encoder: ConvEncoder, cfg: Any = None, *, device: torch.device | str,
    action_dim: int | None = None, discrete_actions: bool = False,
) -> Objective:
    """Registry objective ``name`` (config ``cfg``, None = its defaults) around the agent's ``encoder``, on ``device``.

    action_dim / discrete_actions describe the env's actions, for objectives that read them.
    """
    from atcrl.ul.registry import make_objective

    objective = make_objective(name, encoder, cfg, action_dim=action_dim, discrete_actions=discrete_actions)
    return check_objective(objective.to(device), encoder)  # type: ignore[attr-defined]


def check_objective(objective: Objective, encoder: ConvEncoder) -> Objective:
    """``objective``, if it trains ``encoder`` (the agent's conv) and not a conv of its own; ValueError otherwise."""
    if objective.encoder is not encoder:
        raise ValueError("the UL objective must train the agent's own conv (objective.encoder is not it)")
    return objective


class OnlineUL:
    """An objective, its optimizer and schedule, the replays it samples from, and its update count."""

    def __init__(self, objective: Objective, replays: Sequence[Replay | DeviceReplay], optim: ULOptimConfig,
                 fast: FastPathConfig | None, device: torch.device | str):
        """replays: where batches come from, an equal share (+-1) from each (one for SAC, one per env for PPO).
        fast: the fast path the losses run on (None: as they are)."""
        if not replays:
            raise ValueError("online UL needs at least one replay to sample from")
        self.objective = objective
        self.replays = list(replays)
        self.optim = optim
        self.grad_clip = objective_grad_clip(getattr(objective, "cfg", None), optim.grad_clip)
        """The objective's own clip where it has one (CPC: 1000), else ``optim.grad_clip``, as offline."""
        self.fast = fast
        self.device = torch.device(device)
        self.optimizer, self.scheduler = make_ul_optimizer(objective, optim, fast=fast)
        self.updates = 0
        """UL updates done so far."""
        self.priorities: list[np.ndarray] | None = None
        """Per replay, [capacity] slot weights to draw pair anchors by (None: uniformly); set by a loop that
        prioritises its UL samples and kept up to date there."""
        self._out: PairBatch | None = None  # the pair batch every sample after the first is gathered into

    # ------------------------------------------------------------------ sampling
    def sample(self, rng: np.random.Generator) -> PairBatch | SequenceBatch:
        """The objective's batch (on the CPU; from replays on the device, there), an equal share (+-1) from every replay
        (counted in whole anchor runs where the objective samples runs of consecutive anchors).

        Pair batches after the first are gathered straight into one reused buffer (pinned on CUDA),
        each replay's share into its slice: nothing to allocate or concatenate per update. The
        batch returned is valid until the next call.
        """
        need = self.objective.sampling
        E, run = len(self.replays), need.run
        units = need.batch_size // run  # whole anchor runs (pairs: run 1) are shared out, never split
        shares = [(units // E + (i < units % E)) * run for i in range(E)]
        if isinstance(self.replays[0], DeviceReplay):  # drawn on the device (torch's generator): no staging buffer
            if need.kind != "pairs":
                raise ValueError(f"a replay on the device samples pairs, and {type(self.objective).__name__} needs "
                                 "sequences: keep the replay on the host (device_replay False)")
            parts = [r.sample_pairs(n, delta_t=need.delta_t, run=run) for r, n in zip(self.replays, shares) if n]
            return parts[0] if len(parts) == 1 else concat(parts)
        weights = self.priorities or [None] * E
        if need.kind != "pairs" and self.priorities is not None:
            raise ValueError(f"prioritised UL samples are pairs, and {type(self.objective).__name__} needs sequences")
        if need.kind == "pairs" and self._out is not None:
            start = 0
            for replay, n, w in zip(self.replays, shares, weights):
                if n:
                    view = PairBatch(**{f.name: getattr(self._out, f.name)[start:start + n]
                                        for f in dataclasses.fields(PairBatch)})
                    replay.sample_pairs(n, rng, delta_t=need.delta_t, run=run, out=view, priorities=w)
                start += n
            return self._out
        parts = []
        for replay, n, w in zip(self.replays, shares, weights):
            if n == 0:
                continue
            if need.kind == "pairs":
                parts.append(replay.sample_pairs(n, rng, delta_t=need.delta_t, run=run, priorities=w))
            else:
                parts.append(replay.sample_sequences(n, rng, length=need.length))
        if len(parts) == 1 and need.kind != "pairs":
            return parts[0]
        batch = concat(parts)
        if isinstance(batch, PairBatch):
            # Refilling it next time is safe: each UL step reads its batch completely (and syncs) before returning.
            pin = self.device.type == "cuda"
            batch = PairBatch(**{f.name: getattr(batch, f.name).pin_memory() if pin else getattr(batch, f.name)
                                 for f in dataclasses.fields(PairBatch)})
            self._out = batch
        return batch

    # ------------------------------------------------------------------ updates
    def update(self, rng: np.random.Generator, n: int = 1) -> dict[str, float]:
        """``n`` UL updates on sampled batches; their metrics averaged."""
        sums: dict[str, float] = {}
        for _ in range(n):
            batch = self.sample(rng).to(self.device, non_blocking=True)
            for k, v in ul_step(self.objective, self.optimizer, self.scheduler, batch, self.grad_clip,
                                fast=self.fast).items():
                sums[k] = sums.get(k, 0.0) + v
        self.updates += n
        return {k: v / max(n, 1) for k, v in sums.items()}

    def apply_tensors(self, loss: torch.Tensor, *, check: bool) -> dict[str, torch.Tensor]:
        """Backward, clip, Adam step and momentum targets for a loss the caller computed (e.g. ``loss_terms``
        on an RL forward pass); the count and schedule wait for ``advance``. Returns the gradient norm as a
        device tensor. check: raise on a NaN/inf loss first (a device sync); without it nothing here syncs."""
        if check:
            check_loss(self.objective, loss)
        return {"ul/grad_norm": backward_step(self.objective, self.optimizer, loss, self.grad_clip,
                                              sync_free=not check)}

    def advance(self) -> float:
        """Count an ``apply_tensors`` update and advance the schedule; returns the rate that update used
        (computed on the host: the optimizer's rate may be a device tensor)."""
        lr = self.optim.lr * lr_factor(self.scheduler.last_epoch, self.optim)
        self.scheduler.step()
        self.updates += 1
        return lr

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """This UL's entries of a run's state (see the module doc)."""
        return {"objective": self.objective.state_dict(),
                "ul": {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                       "updates": self.updates}}

    def load_state_dict(self, run_state: dict[str, Any]) -> None:
        """Restore from a run's state (see the module doc)."""
        if "objective" not in run_state or not isinstance(run_state.get("ul"), dict):
            raise KeyError("this run state holds no online-UL state (no 'objective' and 'ul' entries): "
                           "was it written by a run without UL?")
        ul = run_state["ul"]
        self.objective.load_state_dict(run_state["objective"])
        self.optimizer.load_state_dict(ul["optimizer"])
        self.scheduler.load_state_dict(ul["scheduler"])
        self.updates = int(ul["updates"])

