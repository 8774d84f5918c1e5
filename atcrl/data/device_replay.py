"""The replay on the compute device: storage, index sampling, frame stacks and masks there.

``DeviceReplay`` holds the same ring as ``atcrl.data.replay.Replay`` (single frames, stacked at sample
time; per slot the step index within its episode, an episode-end flag and a true-terminal flag), but
every table is a torch tensor on one device, and its samplers (``sample_transitions`` for SAC,
``sample_pairs`` for ATC and the other pair objectives) are nothing but fixed-shape tensor operations on
it. So on a GPU a sampled batch never crosses PCIe, no sample needs a host sync, and the sampling can be
captured into the same CUDA graph as the update that consumes it.

What a sample may read, exactly as the host replay rules it (``replay_index`` states those rules): a
transition starts at a slot with an action (not an episode's final observation, not the newest slot), a
pair at any stored observation, in both cases one whose frame stack does not reach an overwritten slot;
looking ahead (n-step targets, Δt positives) stops at the episode end and at the newest slot. The ring's
cursor lives in two device scalars (``oldest`` and ``size``), written at each add, so a captured sampler
always sees the current ring.

Anchors are drawn uniformly without replacement, as the host replay does, by the top-k of i.i.d.
uniform keys over the allowed slots (a uniformly random subset), not from a numpy generator: the two
replays draw different, equally distributed batches. Callers check ``num_transitions`` before
sampling; the pool can be up to ``frame_stack - 1`` anchors smaller once the ring has wrapped, so a
batch must stay below the stored transitions by that much (a replay of 1e5 slots and a batch of 256
are far from it)."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from atcrl.data.batches import PairBatch, TransitionBatch
from atcrl.data.replay import Replay, check_ring, check_run, stacked_frame_hint
from atcrl.device import Staging


class DeviceReplay:
    """Ring buffer of single frames on ``device``; samples stacked n-step transitions and (t, t + Δt) pairs there."""

    def __init__(
        self,
        capacity: int,
        frame_shape: tuple[int, ...],
        *,
        frame_stack: int,
        action_shape: tuple[int, ...] = (),
        action_dtype: torch.dtype = torch.float32,
        frame_dtype: torch.dtype = torch.uint8,
        device: torch.device | str = "cpu",
    ) -> None:
        check_ring(capacity, frame_shape, frame_stack)
        self.capacity, self.frame_stack = int(capacity), int(frame_stack)
        self.frame_shape = tuple(int(s) for s in frame_shape)
        self.action_shape = tuple(int(s) for s in action_shape)
        self.device = torch.device(device)
        dev = self.device
        self.frames = torch.zeros((capacity, *self.frame_shape), dtype=frame_dtype, device=dev)
        self.actions = torch.zeros((capacity, *self.action_shape), dtype=action_dtype, device=dev)
        self.rewards = torch.zeros(capacity, dtype=torch.float32, device=dev)
        self.step = torch.zeros(capacity, dtype=torch.int64, device=dev)
        self.last = torch.zeros(capacity, dtype=torch.bool, device=dev)
        self.terminal = torch.zeros(capacity, dtype=torch.bool, device=dev)
        self.oldest = torch.zeros((), dtype=torch.int64, device=dev)
        """Array index of the oldest stored slot (device scalar, so captured samplers read it live)."""
        self.size = torch.zeros((), dtype=torch.int64, device=dev)
        """Slots stored (device scalar)."""
        self._slots = torch.arange(capacity, device=dev)
        self._stage = Staging(self.device)  # host actions reach the device without waiting for queued work
        # Host-side bookkeeping (Python ints and flags): what writes and ``num_transitions`` need, no sync.
        self._written = 0
        self._open = False
        self._episode_step = 0
        self._ended = 0  # final observations among the stored slots
        self._last_host = np.zeros(capacity, dtype=bool)

    @classmethod
    def from_replay(cls, replay: Replay, device: torch.device | str) -> DeviceReplay:
        """A copy of a host replay (its frames, bookkeeping and cursor; not its physics) on ``device``."""
        state = replay.state_dict()
        copy = cls(replay.capacity, replay.frame_shape, frame_stack=replay.frame_stack, action_shape=replay.action_shape,
                   action_dtype=state["actions"].dtype, frame_dtype=state["frames"].dtype, device=device)
        copy.load_state_dict(state)
        return copy

    # ------------------------------------------------------------------ sizes
    def __len__(self) -> int:
        return min(self._written, self.capacity)

    @property
    def num_transitions(self) -> int:
        """Stored (o_t, a_t, r_t, o_{t+1}) steps: slots that have an action."""
        size = len(self)
        return size - self._ended - int(self._open and size > 0)

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, name).numel() * getattr(self, name).element_size() for name in _TABLES)

    @property
    def _newest(self) -> int:
        return (self._written - 1) % self.capacity

    # ------------------------------------------------------------------ adding
    def add_first(self, frame: torch.Tensor | np.ndarray) -> None:
        """Store the first frame after a reset. An episode still open is closed as cut (bootstrap kept)."""
        frame = self._check_frame(frame, "frame")
        if self._open:
            self._mark_last(self._newest, terminal=False)
        self._episode_step = 0
        self._write(frame)
        self._open = True

    def add_step(self, action: Any, reward: float, next_frame: torch.Tensor | np.ndarray,
                 terminated: bool, truncated: bool) -> None:
        """Store a_t and r_t on the newest slot and o_{t+1} in a new one; ends the episode if done."""
        if not self._open:
            raise ValueError("add_step needs an episode in progress: call add_first(frame) after reset")
        frame = self._check_frame(next_frame, "next_frame")
        action = self._stage(torch.as_tensor(action).to(self.actions.dtype))
        if tuple(action.shape) != self.action_shape:
            raise ValueError(f"action must have shape {self.action_shape}, got {tuple(action.shape)}")
        newest = self._newest
        self.actions[newest].copy_(action, non_blocking=True)
        self.rewards[newest].fill_(float(reward))
        self._episode_step += 1
        self._write(frame)
        if terminated or truncated:
            self._mark_last(self._newest, terminal=bool(terminated))
            self._open = False

    def _write(self, frame: torch.Tensor) -> None:
        slot = self._written % self.capacity
        if self._written >= self.capacity and self._last_host[slot]:
            self._ended -= 1  # the overwritten slot was a final observation
        self.frames[slot].copy_(frame, non_blocking=True)
        self.actions[slot].zero_()  # a final observation keeps action and reward 0, as on the host
        self.rewards[slot].zero_()
        self.step[slot].fill_(self._episode_step)
        self.last[slot].fill_(False)
        self.terminal[slot].fill_(False)
        self._last_host[slot] = False
        self._written += 1
        size = min(self._written, self.capacity)
        self.size.fill_(size)
        self.oldest.fill_((self._written - size) % self.capacity)

    def _mark_last(self, slot: int, *, terminal: bool) -> None:
        self.last[slot].fill_(True)
        self.terminal[slot].fill_(terminal)
        self._last_host[slot] = True
        self._ended += 1

    def _check_frame(self, frame: torch.Tensor | np.ndarray, what: str) -> torch.Tensor:
        frame = frame if torch.is_tensor(frame) else torch.from_numpy(np.ascontiguousarray(frame))
        if tuple(frame.shape) != self.frame_shape:
            hint = stacked_frame_hint(self.frame_shape, tuple(frame.shape))
            raise ValueError(f"{what} must have shape {self.frame_shape}, got {tuple(frame.shape)}{hint}")
        if frame.dtype != self.frames.dtype:
            raise ValueError(f"{what} must have dtype {self.frames.dtype}, got {frame.dtype}")
        return frame

    # ------------------------------------------------------------------ sampling
    def rel(self, slots: torch.Tensor) -> torch.Tensor:
        """Position of array slots counted from the oldest stored slot."""
        return (slots - self.oldest) % self.capacity

    def anchor_mask(self, kind: Literal["step", "obs"] = "step") -> torch.Tensor:
        """[capacity] bool: the slots a sample may start at (see the module doc): "step", a transition (a slot
        with an action); "obs", a pair anchor (any stored observation)."""
        rel = self.rel(self._slots)
        # Slots near the oldest whose frame stack would reach back past it (into an overwritten slot).
        stack_intact = (rel >= self.frame_stack - 1) | (self.step <= rel)
        if kind == "obs":
            return (rel < self.size) & stack_intact
        stored = rel < self.size - 1  # below the newest slot, which has no action yet or ends an episode
        return stored & ~self.last & stack_intact

    def draw(self, batch_size: int, generator: torch.Generator | None = None,
             kind: Literal["step", "obs"] = "step", run: int = 1) -> torch.Tensor:
        """``batch_size`` distinct anchor slots of ``kind``, uniformly at random (top-k of uniform keys); with
        ``run`` > 1, slots whose next ``run - 1`` stored slots lie before the write cursor too (run starts)."""
        mask = self.anchor_mask(kind)
        if run > 1:
            mask = mask & (self.rel(self._slots) < self.size - (run - 1))
        keys = torch.rand(self.capacity, device=self.device, generator=generator)
        keys = torch.where(mask, keys, -1.0)
        return keys.topk(batch_size, sorted=False).indices

    def steps_to_end(self, slots: torch.Tensor, horizon: int) -> torch.Tensor:
        """Steps from each slot to its episode's last stored slot (or the newest slot), capped at horizon."""
        rel = self.rel(slots)[:, None] + torch.arange(horizon, device=self.device)
        ahead = (torch.minimum(rel, self.size - 1) + self.oldest) % self.capacity
        end = (rel >= self.size - 1) | self.last[ahead]
        return torch.where(end.any(1), end.int().argmax(1), horizon)

    def stacks(self, slots: torch.Tensor) -> torch.Tensor:
        """Frame stacks ending at ``slots`` → [B, k * C, H, W], oldest frame first; before an episode's
        first frame the stack repeats it."""
        k = self.frame_stack
        back = torch.minimum(torch.arange(k - 1, -1, -1, device=self.device), self.step[slots][:, None])
        frames = self.frames[(slots[:, None] - back) % self.capacity]
        return frames.reshape(len(slots), k * self.frame_shape[0], *self.frame_shape[1:])

    def transitions_at(self, slots: torch.Tensor, *, n_step: int = 1, gamma: float = 0.99) -> TransitionBatch:
        """The n-step transitions starting at anchor ``slots`` (as ``Replay.sample_transitions`` defines them)."""
        n = self.steps_to_end(slots, n_step)
        j = torch.arange(n_step, device=self.device)
        ahead = (slots[:, None] + j) % self.capacity
        rewards = torch.where(j[None] < n[:, None], self.rewards[ahead], 0.0).double()
        next_slots = (slots + n) % self.capacity
        discount = gamma ** n.double() * ~self.terminal[next_slots]
        return TransitionBatch(
            obs=self.stacks(slots), action=self.actions[slots],
            reward=(rewards * gamma ** j.double()).sum(1).float(), discount=discount.float(),
            next_obs=self.stacks(next_slots), task=torch.zeros(len(slots), dtype=torch.int64, device=self.device))

    def pairs_at(self, slots: torch.Tensor, *, delta_t: int) -> PairBatch:
        """(o_t, o_{t+Δt}) pairs anchored at ``slots`` (as ``Replay.sample_pairs`` defines them): past the
        episode's last stored frame the positive is that frame, ``valid`` False and the actions beyond zero."""
        d = self.steps_to_end(slots, delta_t) if delta_t else torch.zeros_like(slots)
        j = torch.arange(delta_t, device=self.device)
        ahead = (slots[:, None] + j) % self.capacity
        inside = (j[None] < d[:, None]).reshape(len(slots), delta_t, *([1] * len(self.action_shape)))
        return PairBatch(
            anchor=self.stacks(slots), positive=self.stacks((slots + d) % self.capacity), valid=d >= delta_t,
            actions=self.actions[ahead].masked_fill(~inside, 0),
            task=torch.zeros(len(slots), dtype=torch.int64, device=self.device))

    def sample_pairs(self, batch_size: int, generator: torch.Generator | None = None, *,
                     delta_t: int, run: int = 1) -> PairBatch:
        """``batch_size`` pairs on the device (no host sync, fixed shapes): distinct anchors, or with ``run`` > 1
        distinct starts of runs of ``run`` consecutive anchors, laid out as ``Replay.sample_pairs`` lays them
        out. Callers check once that some episode is longer than ``delta_t`` (the host replay's ``sample_pairs``
        does)."""
        if delta_t < 0:
            raise ValueError(f"delta_t must be >= 0, got {delta_t}")
        check_run(batch_size, run)
        if batch_size // run > len(self) - (run - 1):
            raise ValueError(f"{batch_size // run} runs of {run} steps do not fit the {len(self)} observations stored")
        starts = self.draw(batch_size // run, generator, "obs", run)
        slots = (starts[:, None] + torch.arange(run, device=self.device)).reshape(-1) % self.capacity
        return self.pairs_at(slots, delta_t=delta_t)

    def sample_transitions(self, batch_size: int, generator: torch.Generator | None = None, *,
                           n_step: int = 1, gamma: float = 0.99) -> TransitionBatch:
        """``batch_size`` n-step transitions on the device: no host sync, fixed shapes (graph-capturable)."""
        if n_step < 1:
            raise ValueError(f"n_step must be >= 1, got {n_step}")
        if batch_size > self.num_transitions:
            raise ValueError(f"batch size {batch_size} is larger than the {self.num_transitions} transitions stored")
        return self.transitions_at(self.draw(batch_size, generator), n_step=n_step, gamma=gamma)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The stored slots and the cursor as CPU tensors, in the host replay's checkpoint layout (so a run
        checkpointed with its replay on a GPU resumes with either replay): one device-to-host copy per table."""
        n = len(self)
        state: dict[str, Any] = {name: getattr(self, name)[:n].cpu() for name in _TABLES}
        state["step"] = state["step"].to(torch.int32)
        state.update(written=self._written, open=self._open, capacity=self.capacity)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Refill from a state of this layout (``state_dict`` here, or the host replay's checkpoint state)."""
        if int(state["capacity"]) != self.capacity:
            raise ValueError(f"the saved replay holds {state['capacity']} slots, this one {self.capacity}")
        n = len(state["frames"])
        for name in _TABLES:
            getattr(self, name)[:n].copy_(torch.as_tensor(state[name]))
        self._written, self._open = int(state["written"]), bool(state["open"])
        self._last_host[:] = False
        self._last_host[:n] = torch.as_tensor(state["last"]).numpy()
        self._ended = int(self._last_host.sum())
        size = len(self)
        self._episode_step = int(self.step[self._newest]) if self._open else 0
        self.size.fill_(size)
        self.oldest.fill_((self._written - size) % self.capacity)


_TABLES = ("frames", "actions", "rewards", "step", "last", "terminal")
