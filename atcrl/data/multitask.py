"""Several single-task replays sampled as one: every batch is split evenly across tasks.

Tasks may have different action sizes (e.g. cartpole 1, cheetah 6); their actions are zero-padded
on the right to the largest shape so the batch stays one tensor. ``task`` says which row is which.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from atcrl.data.batches import PairBatch, SequenceBatch, TransitionBatch, concat
from atcrl.data.device_replay import DeviceReplay
from atcrl.data.episode import Episode
from atcrl.data.replay import Replay, check_run


class MultiTaskReplay:
    """One Replay per task; samplers take ``batch_size // num_tasks`` rows from each, remainder at random.

    Rows come grouped by task (task 0 first); ``task`` holds each row's index into ``task_names``.
    """

    def __init__(self, replays: Sequence[Replay], task_names: Sequence[str] | None = None) -> None:
        if not replays:
            raise ValueError("MultiTaskReplay needs at least one replay")
        self.replays = list(replays)
        self.task_names = [str(i) for i in range(len(replays))] if task_names is None else list(task_names)
        if len(self.task_names) != len(self.replays):
            raise ValueError(f"{len(self.task_names)} task names for {len(self.replays)} replays")
        for name, r in zip(self.task_names, self.replays):
            if _layout(r) != _layout(self.replays[0]):
                raise ValueError(
                    f"task {name!r} stores (frame shape, frame dtype, frame stack, action dtype, action ndim) "
                    f"{_layout(r)}, but task {self.task_names[0]!r} stores {_layout(self.replays[0])}"
                )
        self.action_shape = tuple(max(dims) for dims in zip(*(r.action_shape for r in self.replays)))
        """Action shape of every batch: the largest of the tasks' (smaller ones are zero-padded)."""

    @classmethod
    def from_episodes(
        cls, episodes: Iterable[Episode], *, frame_stack: int, capacity_per_task: int | None = None
    ) -> MultiTaskReplay:
        """Group episodes by ``Episode.task`` (first-seen order) into one Replay per task."""
        by_task: dict[str, list[Episode]] = {}
        for ep in episodes:
            by_task.setdefault(ep.task, []).append(ep)
        replays = [
            Replay.from_episodes(eps, frame_stack=frame_stack, capacity=capacity_per_task)
            for eps in by_task.values()
        ]
        return cls(replays, list(by_task))

    def __len__(self) -> int:
        return sum(len(r) for r in self.replays)

    @property
    def num_transitions(self) -> int:
        return sum(r.num_transitions for r in self.replays)

    @property
    def nbytes(self) -> int:
        return sum(r.nbytes for r in self.replays)

    def split(self, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        """Rows per task: equal shares, the remainder given to distinct tasks chosen at random."""
        counts = np.full(len(self.replays), batch_size // len(self.replays))
        counts[rng.choice(len(self.replays), batch_size % len(self.replays), replace=False)] += 1
        return counts

    def sample_transitions(
        self, batch_size: int, rng: np.random.Generator, *, n_step: int = 1, gamma: float = 0.99,
        sign_rewards: bool = False,
    ) -> TransitionBatch:
        """``Replay.sample_transitions`` from every replay, its share of the batch each (``sign_rewards`` needs
        host replays)."""
        extra = {"sign_rewards": True} if sign_rewards else {}
        return self._sample("sample_transitions", batch_size, rng, n_step=n_step, gamma=gamma, **extra)

    def sample_pairs(self, batch_size: int, rng: np.random.Generator, *, delta_t: int, run: int = 1) -> PairBatch:
        """Pairs from every task; with ``run`` > 1 (anchor runs, see ``Replay.sample_pairs``) whole runs are split."""
        check_run(batch_size, run)
        return self._sample("sample_pairs", batch_size, rng, unit=run, delta_t=delta_t, run=run)

    def sample_sequences(self, batch_size: int, rng: np.random.Generator, *, length: int) -> SequenceBatch:
        return self._sample("sample_sequences", batch_size, rng, length=length)

    def to(self, device: torch.device | str) -> MultiTaskReplay:
        """The same tasks with each replay copied to ``device`` (``DeviceReplay``): its pair batches are sampled
        there, anchors drawn with torch's generator of that device; shares per task still come from ``rng``."""
        return MultiTaskReplay([DeviceReplay.from_replay(r, device) for r in self.replays], self.task_names)

    def _sample(self, method: str, batch_size: int, rng: np.random.Generator, unit: int = 1, **kwargs):
        """``batch_size`` rows split over the tasks in whole units of ``unit`` rows."""
        parts = []
        for i, (name, replay, count) in enumerate(
            zip(self.task_names, self.replays, self.split(batch_size // unit, rng) * unit)
        ):
            try:
                # A device replay draws its anchors with torch's generator (None: the device's default).
                part = getattr(replay, method)(int(count), rng if isinstance(replay, Replay) else None, **kwargs)
            except ValueError as err:
                raise ValueError(f"task {name!r}: {err}") from err
            part.task.fill_(i)
            action = "action" if hasattr(part, "action") else "actions"
            parts.append(replace(part, **{action: self._pad_actions(getattr(part, action))}))
        return concat(parts)

    def _pad_actions(self, actions: torch.Tensor) -> torch.Tensor:
        missing = [
            m - s for m, s in zip(self.action_shape, actions.shape[actions.ndim - len(self.action_shape) :])
        ]
        if not any(missing):
            return actions
        pad = [p for m in reversed(missing) for p in (0, m)]  # F.pad lists the last dim first
        return F.pad(actions, pad)


def _layout(r: Replay) -> tuple:
    return (r.frame_shape, r.frames.dtype, r.frame_stack, r.actions.dtype, len(r.action_shape))
