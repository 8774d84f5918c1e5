"""One SAC update, with its online UL update, as a step whose metrics stay on the device.

``SACStep`` is what the online SAC loop calls once per agent step after the warm-up:

    batch    = replay sample (host Replay: gathered on the CPU, copied over; DeviceReplay: on the device)
    batch    = random shift of obs and next_obs                    (agent.prepare)
    rl stats = critic, actor + temperature, target EMAs, Adam steps (agent.update_tensors)
    ul stats = ATC on the critic's features of the same batch, or on its own sampled batch; its Adam step
               and momentum targets                                (OnlineUL)
    meter   += every stat, as a device tensor

Nothing in that list reads a value back to the host, so on a GPU the metrics cost nothing until the
loop reads them (``read``, every ``log_every`` steps). With ``FastPathConfig.cuda_graph`` on a CUDA
device the whole list runs as one captured CUDA graph per phase of the actor/target cadence
(``lcm(actor_update_every, target_update_every)`` graphs; 2 at the defaults): the first
``WARMUP_UPDATES`` updates run eagerly on a side stream, so optimizer states and library handles exist
before capture; then each phase is captured once (capture records without running, so that update is
replayed at once) and replayed from then on. Python-side counters (update counts, the UL schedule)
advance outside the graph; the UL learning rate is a device tensor the schedule writes in place.

Where the device runs eagerly (the CPU) a NaN/inf loss is caught before its optimizer step, as it always
was. Under capture nothing may wait for the device, so a NaN/inf is caught when the metrics are read (at
each log interval and before every checkpoint, ``check_finite``): a diverged run still never writes a
checkpoint, but its weights in memory may already hold NaN.

A restored checkpoint replaces optimizer state tensors that a graph would still point at, so the run drops
its step on ``load_state_dict`` and captures anew (``SACRun.load_state_dict``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from atcrl.data.batches import TransitionBatch
from atcrl.data.device_replay import DeviceReplay
from atcrl.fastpath import autocast, captures
from atcrl.train.captured import Captured

if TYPE_CHECKING:
    from atcrl.train.sac_loop import SACRun

__all__ = ["SACStep"]


class SACStep:
    """The run's update step: call it once per update; ``read`` the metrics once per interval."""

    def __init__(self, run: SACRun):
        self.run = run
        agent = run.agent
        self.device = agent.device
        self.capture = captures(run.cfg.fast, self.device)
        self.reuse = run.reuses_rl_batch
        if self.capture and not isinstance(run.replay, DeviceReplay):
            raise ValueError("cuda_graph needs the replay on the device: set device_replay to True (or auto)")
        if self.capture and run.ul is not None and not self.reuse:
            raise ValueError(
                f"cuda_graph captures online UL only when it reuses the critic's minibatch (ATC, Δt 1, UL batch = "
                f"batch); {run.cfg.ul!r} with ul_batch_size {run.cfg.ul_batch_size} samples its own: "
                "turn cuda_graph off")
        # On the CPU every check is free, so a NaN/inf stops the run before its optimizer step.
        self.check = self.device.type == "cpu"
        self.period = math.lcm(agent.cfg.actor_update_every, agent.cfg.target_update_every)
        self.runner = Captured(self.device, self.capture)  # one graph per phase of the cadence
        self.meter = self.runner.meter
        self._out: TransitionBatch | None = None  # host replay on CUDA: the pinned buffer batches are gathered into
        self._copied: torch.cuda.Event | None = None  # and the event that marks the last copy out of it done

    # ------------------------------------------------------------------ one update
    def __call__(self) -> None:
        run, agent = self.run, self.run.agent
        phase = agent.updates % self.period
        actor, targets = agent.schedule(agent.updates)
        self.runner(phase, lambda: self._body(actor, targets))
        agent.updates += 1
        if run.ul is not None and self.reuse:
            self.meter.add_host("ul/lr", run.ul.advance())

    def _body(self, actor: bool, targets: bool) -> list[str]:
        """Sample, augment, update; every metric into the meter. Returns the metric names it added."""
        run, agent, cfg = self.run, self.run.agent, self.run.cfg
        batch = agent.prepare(self._sample())
        stats, features = agent.update_tensors(batch, actor=actor, targets=targets, keep_graph=self.reuse,
                                               check=self.check)
        if run.ul is not None and self.reuse:
            # Anchor = shifted obs (its conv pass is shared with the critic), positive = shifted next_obs;
            # with 1-step transitions next_obs always lies inside the episode, so every row is valid.
            with autocast(self.device, cfg.fast):
                loss, ul_stats = run.ul.objective.loss_terms(features, batch.next_obs)  # type: ignore[attr-defined]
            stats = {**stats, **ul_stats, **run.ul.apply_tensors(loss, check=self.check)}
        elif run.ul is not None:
            self.meter.add(run.ul.update(run.rng))  # host numbers: summed on the host
        return self.meter.add(stats)

    def _sample(self) -> TransitionBatch:
        run, cfg = self.run, self.run.cfg
        if isinstance(run.replay, DeviceReplay):
            return run.replay.sample_transitions(cfg.batch_size, n_step=cfg.n_step, gamma=cfg.discount)
        if self._copied is not None:  # the last batch's copy out of the pinned buffer must be done before a refill
            self._copied.synchronize()
        batch = run.replay.sample_transitions(cfg.batch_size, run.rng, n_step=cfg.n_step, gamma=cfg.discount,
                                              out=self._out)
        if self.device.type != "cuda":
            return batch
        if self._out is None:  # later batches land in pinned memory
            self._out = TransitionBatch(**{name: t.pin_memory() for name, t in vars(batch).items()})
        batch = batch.to(self.device, non_blocking=True)
        self._copied = torch.cuda.Event()
        self._copied.record()
        return batch

    @property
    def graphs(self) -> dict:
        """The captured graph of each phase (empty where nothing is captured)."""
        return self.runner.graphs

    # ------------------------------------------------------------------ metrics
    def read(self) -> dict[str, float]:
        """Interval means of the step's metrics (one sync); FloatingPointError if one is NaN/inf."""
        return self.meter.read()

    def check_finite(self) -> None:
        """Before a checkpoint: FloatingPointError if a metric so far is NaN/inf (needed only under capture)."""
        if not self.check:
            self.meter.check_finite()
