"""Position arithmetic for the replay ring (internal to atcrl.data.replay): which slots may anchor a
sample, how far each can look ahead within its episode, and which slots make up each frame stack.

Positions: "rel" counts stored slots from the oldest survivor (0 .. size - 1); the array index is
(oldest + rel) % capacity. Looking forward (n-step targets, Δt positives, sequences) stops at the
newest slot, so no read crosses the write cursor. Looking back (frame stacks) must stay at rel >= 0:
slots whose stack would reach an overwritten slot are never sampled.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import torch

# Anchor kinds: any observation (pairs), an observation with an action (transitions), a sequence start.
OBS, STEP, SEQ = "obs", "step", "seq"


class RingIndex:
    """The ring's positions as they stand between two writes.

    The replay makes a new one after every write, so the anchor pools cached here never go stale.
    ``step`` and ``last`` are the replay's per-slot step index and episode-end flag arrays.
    """

    def __init__(self, step: np.ndarray, last: np.ndarray, written: int, frame_stack: int) -> None:
        self.capacity = len(step)
        self.size = min(written, self.capacity)
        self.oldest = (written - self.size) % self.capacity
        self.frame_stack = frame_stack
        self._step = step
        self._last = last
        self._pools: dict[tuple[str, int], np.ndarray] = {}

    def slots(self, rel: np.ndarray | int) -> np.ndarray:
        return (np.asarray(rel) + self.oldest) % self.capacity

    def anchor_pool(self, kind: str, length: int = 1) -> np.ndarray:
        """Sorted rel positions that may start a sample of ``kind``; for OBS and SEQ, one whose ``length`` steps
        all lie before the write cursor (a run of pair anchors, a sequence window)."""
        key = (kind, length)
        if key not in self._pools:
            size = self.size
            if kind == OBS:
                ok = np.ones(size, bool)
            else:
                ok = ~np.roll(self._last[:size], -self.oldest)
                ok[-1:] = False  # the newest slot has no action yet (or is a final observation)
            if kind != STEP:
                ok[max(0, size - length + 1) :] = False  # a window (run) must end before the cursor
            head = np.arange(min(self.frame_stack - 1, size))
            ok[head] &= self._step[self.slots(head)] <= head  # stack would reach an overwritten slot
            self._pools[key] = np.flatnonzero(ok)
        return self._pools[key]

    def draw(self, kind: str, batch_size: int, rng: np.random.Generator, what: str, length: int = 1,
             priorities: np.ndarray | None = None):
        """``batch_size`` distinct anchors of ``kind``, uniformly at random, or (``priorities``, one weight >= 0
        per array slot) with probability proportional to their slot's weight; ``what`` names them in errors."""
        if batch_size < 0:
            raise ValueError(f"batch_size must be >= 0, got {batch_size}")
        pool = self.anchor_pool(kind, length)
        if batch_size > len(pool):
            raise ValueError(
                f"batch size {batch_size} is larger than the {len(pool)} {what} available "
                f"({self.size} slots stored, frame_stack {self.frame_stack})"
            )
        if priorities is None:
            return pool[rng.choice(len(pool), batch_size, replace=False)]
        weights = np.asarray(priorities, np.float64)[self.slots(pool)]
        if np.count_nonzero(weights) < batch_size:
            raise ValueError(f"only {np.count_nonzero(weights)} of the {len(pool)} {what} have a priority > 0; "
                             f"a batch of {batch_size} distinct ones needs more")
        return pool[rng.choice(len(pool), batch_size, replace=False, p=weights / weights.sum())]

    @cached_property
    def longest_span(self) -> int:
        """Most steps from any sampleable observation to its episode's last stored slot (-1 if none)."""
        is_end = np.roll(self._last[: self.size], -self.oldest)
        is_end[-1:] = True
        ends = np.flatnonzero(is_end)
        starts = ends - self._step[self.slots(ends)]
        # An episode whose start was overwritten has its first intact stack at rel k - 1.
        first = np.where(starts >= 0, starts, self.frame_stack - 1)
        return int((ends - first).max(initial=-1))

    def steps_to_end(self, rel: np.ndarray, horizon: int) -> np.ndarray:
        """Steps from each position to its episode's last stored slot (or the newest slot), capped at horizon."""
        if horizon == 0:
            return np.zeros(len(rel), np.int64)
        ahead = rel[:, None] + np.arange(horizon)
        end = (ahead >= self.size - 1) | self._last[self.slots(np.minimum(ahead, self.size - 1))]
        return np.where(end.any(1), end.argmax(1), horizon)

    def ahead(self, table: np.ndarray, rel: np.ndarray, horizon: int, steps: np.ndarray) -> np.ndarray:
        """table[rel + j] for j < horizon as [B, horizon, ...]; zero where j >= steps (past the episode)."""
        ahead = np.minimum(rel[:, None] + np.arange(horizon), self.size - 1)
        values = table[self.slots(ahead)]
        values[np.arange(horizon)[None, :] >= steps[:, None]] = 0
        return values

    def stacks(
        self, frames: np.ndarray, rel: np.ndarray, out: torch.Tensor | None
    ) -> np.ndarray | torch.Tensor:
        """Frame stacks at ``rel`` (any shape) → [*rel.shape, k * C, H, W], oldest frame first.

        Before an episode's first frame the stack repeats it, as episode.stack_indices describes.
        """
        k = self.frame_stack
        back = np.minimum(np.arange(k - 1, -1, -1), self._step[self.slots(rel)][..., None])
        slots = self.slots(rel[..., None] - back)
        frame_shape = frames.shape[1:]
        shape = (*rel.shape, k * frame_shape[0], *frame_shape[1:])
        if out is None:
            return frames[slots].reshape(shape)
        if tuple(out.shape) != shape or out.dtype != torch.from_numpy(frames[:0]).dtype:
            raise ValueError(f"out buffer must be {shape} {frames.dtype}, got {tuple(out.shape)} {out.dtype}")
        if not out.is_contiguous() or out.device.type != "cpu":
            raise ValueError("out buffers must be contiguous CPU tensors (pinned is fine)")
        # mode="wrap" skips numpy's extra buffering of `out` (indices are in range anyway).
        np.take(frames, slots, axis=0, out=out.numpy().reshape(slots.shape + frame_shape), mode="wrap")
        return out
