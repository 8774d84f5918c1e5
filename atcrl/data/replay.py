"""In-RAM replay of single frames, frame-stacked at sample time, with three vectorised samplers.

Storage is a ring of ``capacity`` slots. A slot holds one observation frame o_t, the action taken
from it, the reward after it, and three bookkeeping fields: t (the step index within its episode),
whether it is its episode's final observation, and whether that final observation is a true
terminal. An episode of T steps uses T + 1 slots; the final observation's action and reward are 0.
Memory is the raw frame bytes plus ~10 bytes per slot (+ actions and physics): stacks are never
stored, they are gathered at sample time exactly as episode.stack_indices describes.
Which slots a sample may start at and read is worked out in replay_index.

Callers with stacked observations [k * C, H, W] store the newest frame only: ``obs[-C:]``.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import chain
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from atcrl.data.batches import PairBatch, SequenceBatch, TransitionBatch
from atcrl.data.episode import Episode
from atcrl.data.replay_index import OBS, SEQ, STEP, RingIndex


def check_ring(capacity: int, frame_shape: tuple[int, ...], frame_stack: int) -> None:
    """ValueError for a ring that cannot hold one transition or a frame shape that is not (C, H, W)."""
    if capacity < 2:
        raise ValueError(f"capacity must be at least 2 slots (one transition), got {capacity}")
    if frame_stack < 1:
        raise ValueError(f"frame_stack must be >= 1, got {frame_stack}")
    if len(frame_shape) != 3:
        raise ValueError(f"frame_shape must be (C, H, W) of one frame, got {frame_shape}")


def check_run(batch_size: int, run: int) -> None:
    """ValueError unless ``batch_size`` pair anchors split into whole runs of ``run`` consecutive steps."""
    if run < 1:
        raise ValueError(f"run (steps per anchor run) must be >= 1, got {run}")
    if batch_size % run:
        raise ValueError(f"a batch of {batch_size} pairs does not split into runs of {run} steps; "
                         f"pick a multiple of {run}")


def stacked_frame_hint(frame_shape: tuple[int, ...], got: tuple[int, ...]) -> str:
    """The hint for a stacked observation passed where one frame belongs ("" if ``got`` is not one)."""
    C = frame_shape[0]
    if len(got) == 3 and got[0] % C == 0 and tuple(got[1:]) == tuple(frame_shape[1:]):
        return f"; for a stacked observation pass only the newest frame, obs[-{C}:]"
    return ""


class Replay:
    """Ring buffer of single frames; samples stacked transitions, (t, t + Δt) pairs and sequences.

    Samplers draw anchors uniformly *without replacement* within a batch: duplicate anchors would be
    false negatives for contrastive objectives, and a batch larger than the data is an error.
    """

    def __init__(
        self,
        capacity: int,
        frame_shape: tuple[int, ...],
        *,
        frame_stack: int,
        action_shape: tuple[int, ...] = (),
        action_dtype: npt.DTypeLike = np.float32,
        frame_dtype: npt.DTypeLike = np.uint8,
        physics_dim: int | None = None,
    ) -> None:
        check_ring(capacity, frame_shape, frame_stack)
        self.capacity = int(capacity)
        self.frame_shape = tuple(int(s) for s in frame_shape)
        self.frame_stack = int(frame_stack)
        self.action_shape = tuple(int(s) for s in action_shape)
        # np.zeros maps pages lazily: untouched capacity costs no RAM until written.
        self.frames = np.zeros((capacity, *self.frame_shape), dtype=frame_dtype)
        self.actions = np.zeros((capacity, *self.action_shape), dtype=action_dtype)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.physics = None if physics_dim is None else np.full((capacity, physics_dim), np.nan)
        """[capacity, S] physics state per slot (NaN where an episode came without one)."""
        self._step = np.zeros(capacity, dtype=np.int32)
        self._last = np.zeros(capacity, dtype=bool)
        self._terminal = np.zeros(capacity, dtype=bool)
        self._written = 0  # slots ever written; the write cursor is _written % capacity
        self._open = False  # add_first started an episode that has not ended yet
        self._index: RingIndex | None = None  # positions as of the last write; dropped by every write

    # ------------------------------------------------------------------ sizes
    def __len__(self) -> int:
        """Slots stored (observations, including episodes' final observations)."""
        return min(self._written, self.capacity)

    @property
    def num_transitions(self) -> int:
        """Stored (o_t, a_t, r_t, o_{t+1}) steps: slots that have an action."""
        size = len(self)
        return size - int(np.count_nonzero(self._last[:size])) - int(self._open and size > 0)

    @property
    def nbytes(self) -> int:
        arrays = [self.frames, self.actions, self.rewards, self._step, self._last, self._terminal]
        return sum(a.nbytes for a in arrays) + (0 if self.physics is None else self.physics.nbytes)

    def _ring(self) -> RingIndex:
        if self._index is None:
            self._index = RingIndex(self._step, self._last, self._written, self.frame_stack)
        return self._index

    @property
    def _newest(self) -> int:
        return (self._written - 1) % self.capacity

    @property
    def newest_slot(self) -> int:
        """Array index of the most recently written frame."""
        return self._newest

    # ------------------------------------------------------------------ adding
    def add_first(self, frame: np.ndarray, physics: np.ndarray | None = None) -> None:
        """Store the first frame after a reset. An episode still open is closed as cut (bootstrap kept)."""
        frame = self._check_frames(np.asarray(frame)[None], "frame")
        physics = self._check_physics(physics, 1)
        self._close_open_episode()
        self._write(frame, 0, physics)
        self._open = True

    def add_step(
        self,
        action: np.ndarray | float,
        reward: float,
        next_frame: np.ndarray,
        terminated: bool,
        truncated: bool,
        physics: np.ndarray | None = None,
    ) -> None:
        """Store a_t and r_t on the newest slot and o_{t+1} in a new one; ends the episode if done.

        When an env reports both flags, ``terminated`` wins: no value lies beyond a true terminal.
        """
        if not self._open:
            raise ValueError("add_step needs an episode in progress: call add_first(frame) after reset")
        action = self._check_actions(np.asarray(action)[None], "action")
        frame = self._check_frames(np.asarray(next_frame)[None], "next_frame")
        physics = self._check_physics(physics, 1)
        newest = self._newest
        self.actions[newest] = action[0]
        self.rewards[newest] = reward
        done = bool(terminated or truncated)
        self._write(frame, self._step[newest] + 1, physics, last=done, terminal=bool(terminated))
        self._open = not done

    def add_episode(self, episode: Episode) -> None:
        """Copy a whole recorded episode in one vectorised write (its final frame ends the episode)."""
        frames = self._check_frames(episode.frames, "episode frames")
        T = len(episode)
        actions = np.zeros((T + 1, *self.action_shape), self.actions.dtype)
        actions[:T] = self._check_actions(episode.actions, "episode actions")
        rewards = np.zeros(T + 1, np.float32)
        rewards[:T] = episode.rewards
        last = np.arange(T + 1) == T
        physics = self._check_physics(episode.physics, T + 1)
        self._close_open_episode()
        self._write(
            frames,
            np.arange(T + 1),
            physics,
            actions=actions,
            rewards=rewards,
            last=last,
            terminal=last & episode.terminated,
        )

    @classmethod
    def from_episodes(
        cls, episodes: Iterable[Episode], *, frame_stack: int, capacity: int | None = None
    ) -> Replay:
        """A replay holding ``episodes``; shapes and dtypes come from the first one.

        Without ``capacity`` the replay is sized to hold every episode (the iterable is consumed
        into a list first); with it, episodes stream in and the oldest are overwritten.
        """
        if capacity is None:
            episodes = list(episodes)
            capacity = max(2, sum(len(ep) + 1 for ep in episodes))
        it = iter(episodes)
        first = next(it, None)
        if first is None:
            raise ValueError("from_episodes got no episodes")
        replay = cls(
            capacity,
            first.frame_shape,
            frame_stack=frame_stack,
            action_shape=first.actions.shape[1:],
            action_dtype=first.actions.dtype,
            frame_dtype=first.frames.dtype,
            physics_dim=None if first.physics is None else first.physics.shape[1],
        )
        for ep in chain([first], it):
            replay.add_episode(ep)
        return replay

    def _write(self, frames: np.ndarray, steps, physics, *, actions=0, rewards=0, last=False, terminal=False):
        """Write len(frames) new slots at the cursor; per-slot fields are arrays or one value for all."""
        n = len(frames)
        keep = min(n, self.capacity)  # an episode longer than the ring leaves only its tail
        slots = (self._written + n - keep + np.arange(keep)) % self.capacity
        tables = (
            self.frames,
            self.actions,
            self.rewards,
            self._step,
            self._last,
            self._terminal,
            self.physics,
        )
        fields = zip(tables, (frames, actions, rewards, steps, last, terminal, physics))
        for table, values in fields:
            if table is not None:
                table[slots] = values if np.isscalar(values) else np.asarray(values)[n - keep :]
        self._written += n
        self._index = None

    def _close_open_episode(self) -> None:
        if self._open:
            self._last[self._newest] = True
            self._open = False
            self._index = None

    def _check_frames(self, frames: np.ndarray, what: str) -> np.ndarray:
        if frames.shape[1:] != self.frame_shape:
            hint = stacked_frame_hint(self.frame_shape, frames.shape[1:])
            raise ValueError(f"{what} must have shape {self.frame_shape} per frame, got {frames.shape[1:]}{hint}")
        if frames.dtype != self.frames.dtype:
            raise ValueError(f"{what} must have dtype {self.frames.dtype}, got {frames.dtype}")
        return frames

    def _check_actions(self, actions: np.ndarray, what: str) -> np.ndarray:
        if actions.shape[1:] != self.action_shape:
            raise ValueError(f"{what} must have shape {self.action_shape} per step, got {actions.shape[1:]}")
        if not np.can_cast(actions.dtype, self.actions.dtype, "same_kind"):
            raise ValueError(f"{what} of dtype {actions.dtype} cannot be stored as {self.actions.dtype}")
        return actions

    def _check_physics(self, physics: np.ndarray | None, n: int) -> np.ndarray | None:
        if self.physics is None:
            return None  # this replay does not keep physics; callers need not strip it
        if physics is None:
            return np.full((n, self.physics.shape[1]), np.nan)
        physics = np.asarray(physics, np.float64).reshape(n, -1)
        if physics.shape[1] != self.physics.shape[1]:
            raise ValueError(
                f"physics must have {self.physics.shape[1]} values per frame, got {physics.shape[1]}"
            )
        return physics

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The stored slots (CPU tensors) and the cursor; the slots beyond are still zero. A ``DeviceReplay``
        reads and writes the same layout, so either kind resumes into either."""
        n = len(self)
        arrays = {"frames": self.frames, "actions": self.actions, "rewards": self.rewards,
                  "step": self._step, "last": self._last, "terminal": self._terminal}
        if self.physics is not None:
            arrays["physics"] = self.physics
        state: dict[str, Any] = {k: torch.from_numpy(np.ascontiguousarray(a[:n])) for k, a in arrays.items()}
        state.update(written=self._written, open=self._open, capacity=self.capacity)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Refill from ``state_dict`` output of a replay with the same capacity and shapes."""
        if int(state["capacity"]) != self.capacity:
            raise ValueError(f"the saved replay holds {state['capacity']} slots, this one {self.capacity}")
        tables = {"frames": self.frames, "actions": self.actions, "rewards": self.rewards,
                  "step": self._step, "last": self._last, "terminal": self._terminal, "physics": self.physics}
        for name, table in tables.items():
            if name in state and table is not None:
                values = torch.as_tensor(state[name]).numpy()
                table[: len(values)] = values
        self._written, self._open = int(state["written"]), bool(state["open"])
        self._index = None

    # ------------------------------------------------------------------ samplers
    def _require_data(self) -> None:
        if len(self) == 0:
            raise ValueError("cannot sample from an empty replay: add episodes first")

    def _check_fits_episodes(self, steps: int, what: str) -> None:
        span = self._ring().longest_span
        if steps > span:
            raise ValueError(
                f"{what} is longer than every stored episode "
                f"(the longest offers {span} steps after an intact frame stack)"
            )

    def _batch(self, cls, out, stacks: dict[str, np.ndarray], **arrays: np.ndarray):
        """A ``cls`` batch of the frame stacks at the rel positions in ``stacks``, plus ``arrays``.

        Without ``out`` the numpy results are wrapped as CPU tensors (sharing memory); with it, the
        stacks are gathered straight into ``out``'s tensors and the other arrays copied into theirs.
        """
        ring = self._ring()
        if out is None:
            arrays.update({name: ring.stacks(self.frames, rel, None) for name, rel in stacks.items()})
            return cls(**{name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in arrays.items()})
        for name, rel in stacks.items():
            ring.stacks(self.frames, rel, getattr(out, name))
        for name, a in arrays.items():
            dst, src = getattr(out, name), torch.from_numpy(np.ascontiguousarray(a))
            if dst.shape != src.shape or dst.dtype != src.dtype:
                raise ValueError(
                    f"out.{name} must be {tuple(src.shape)} {src.dtype}, got {tuple(dst.shape)} {dst.dtype}"
                )
            dst.copy_(src)
        return out

    def sample_transitions(
        self,
        batch_size: int,
        rng: np.random.Generator,
        *,
        n_step: int = 1,
        gamma: float = 0.99,
        sign_rewards: bool = False,
        out: TransitionBatch | None = None,
    ) -> TransitionBatch:
        """n-step transitions: returns summed up to the episode end; discount γ^n' (0 after a true terminal).

        n' < n_step when the episode (or, for the episode in progress, the stored data) ends first.
        ``sign_rewards``: sum sign(r) instead of r (Atari reward clipping; the stored rewards stay raw).
        ``out``: a previous batch of the same shape (e.g. pinned) to fill in place instead of allocating.
        """
        if n_step < 1:
            raise ValueError(f"n_step must be >= 1, got {n_step}")
        self._require_data()
        ring = self._ring()
        rel = ring.draw(STEP, batch_size, rng, "transitions")
        n = ring.steps_to_end(rel, n_step)
        rewards = ring.ahead(self.rewards, rel, n_step, n).astype(np.float64)
        if sign_rewards:
            rewards = np.sign(rewards)
        return self._batch(
            TransitionBatch,
            out,
            {"obs": rel, "next_obs": rel + n},
            action=self.actions[ring.slots(rel)],
            reward=(rewards * gamma ** np.arange(n_step)).sum(1).astype(np.float32),
            discount=(gamma**n * ~self._terminal[ring.slots(rel + n)]).astype(np.float32),
            task=np.zeros(batch_size, np.int64),
        )

    def sample_pairs(
        self,
        batch_size: int,
        rng: np.random.Generator,
        *,
        delta_t: int,
        run: int = 1,
        out: PairBatch | None = None,
        priorities: np.ndarray | None = None,
    ) -> PairBatch:
        """Anchors o_t (any stored observation) and positives o_{t+Δt} from the same episode.

        Where t + Δt lies past the episode's last stored frame (or the newest slot), ``valid`` is False and
        the positive is that last frame (still a real frame of the same episode); actions past it are zero.
        run: anchors come in ``batch_size // run`` runs of ``run`` consecutive stored observations (rows
        i * run .. i * run + run - 1 are one run, oldest first): sequence sampling, where an anchor's negatives
        include its own run's other steps. A run never crosses the write cursor but may cross an episode end;
        each step is masked on its own. Run starts are distinct; two runs may overlap. 1: independent anchors.
        priorities: [capacity] weights >= 0 by slot; anchors (with ``run`` > 1: the runs' first anchors) are then
        drawn, still distinct, with probability proportional to their slot's weight instead of uniformly.
        """
        if delta_t < 0:
            raise ValueError(f"delta_t must be >= 0, got {delta_t}")
        check_run(batch_size, run)
        self._require_data()
        self._check_fits_episodes(delta_t, f"delta_t={delta_t}")
        ring = self._ring()
        what = "observations" if run == 1 else f"starts of {run}-step anchor runs"
        starts = ring.draw(OBS, batch_size // run, rng, what, run, priorities=priorities)
        rel = (starts[:, None] + np.arange(run)).reshape(-1)
        d = ring.steps_to_end(rel, delta_t)
        return self._batch(
            PairBatch,
            out,
            {"anchor": rel, "positive": rel + d},
            valid=d >= delta_t,
            actions=ring.ahead(self.actions, rel, delta_t, d),
            task=np.zeros(batch_size, np.int64),
        )

    def sample_sequences(
        self,
        batch_size: int,
        rng: np.random.Generator,
        *,
        length: int,
        out: SequenceBatch | None = None,
    ) -> SequenceBatch:
        """Time-major windows [T, B, ...] of consecutive steps that never cross the write cursor.

        A step is valid while it is a step (observation with an action) of the window's first
        episode; after that episode ends, ``valid`` is False, action and reward are zero and the
        observation repeats the episode's final frame stack.
        """
        if length < 1:
            raise ValueError(f"sequence length must be >= 1, got {length}")
        self._require_data()
        if length > len(self):
            raise ValueError(f"sequence length {length} exceeds the {len(self)} slots stored")
        self._check_fits_episodes(length, f"sequence length {length}")
        ring = self._ring()
        rel = ring.draw(SEQ, batch_size, rng, f"sequence starts of length {length}", length)
        d = ring.steps_to_end(rel, length)
        j = np.arange(length)[:, None]
        return self._batch(
            SequenceBatch,
            out,
            {"obs": rel + np.minimum(j, d)},
            action=np.swapaxes(ring.ahead(self.actions, rel, length, d), 0, 1),
            reward=ring.ahead(self.rewards, rel, length, d).T,
            valid=j < d,
            task=np.zeros(batch_size, np.int64),
        )


def episodes_of_state(state: dict[str, Any], task: str = "") -> tuple[list[Episode], int]:
    """The episodes a ``Replay.state_dict()`` holds, oldest first, and how many leading slots were dropped.

    A ring that has wrapped starts mid-episode: the slots before the first surviving episode start (step 0)
    lost their beginning and are dropped (their count is returned). Every later episode is whole. One that
    ended with a true terminal is ``terminated``; one that ended otherwise (a time limit, or cut by a reset
    or a resume) is ``truncated``; the episode still in progress at the end is written as ``truncated`` with
    the steps stored so far (its newest frame has no action yet). Actions and rewards are the stored ones
    (raw rewards), physics where the replay kept it.
    """
    size = len(state["step"])
    written, capacity = int(state["written"]), int(state["capacity"])
    order = (written - size + np.arange(size)) % capacity  # slot indices, oldest first
    arrays = {name: torch.as_tensor(state[name]).numpy() for name in
              ("frames", "actions", "rewards", "step", "last", "terminal", "physics") if name in state}
    step, last = arrays["step"][order], arrays["last"][order]
    starts = np.flatnonzero(step == 0)
    dropped = int(starts[0]) if len(starts) else size
    episodes: list[Episode] = []
    for begin, end in zip(starts, [*starts[1:], size]):
        ends = np.flatnonzero(last[begin:end])
        stop = begin + int(ends[0]) + 1 if len(ends) else end  # one past the episode's final frame
        if not len(ends) and end < size:
            raise ValueError(f"replay slot {int(order[end - 1])} ends no episode before the next one starts: "
                             "not a Replay state")
        slots = order[begin:stop]
        if not np.array_equal(arrays["step"][slots], np.arange(len(slots))):
            raise ValueError(f"replay slots {int(slots[0])}..{int(slots[-1])} do not count one episode's steps: "
                             "not a Replay state")
        if len(slots) < 2:
            continue  # a reset frame with no step after it holds no transition
        terminated = bool(len(ends) and arrays["terminal"][slots[-1]])
        physics = arrays.get("physics")
        episodes.append(Episode(
            frames=arrays["frames"][slots], actions=arrays["actions"][slots[:-1]],
            rewards=arrays["rewards"][slots[:-1]].astype(np.float32), terminated=terminated,
            truncated=not terminated, physics=None if physics is None else physics[slots].astype(np.float64),
            task=task))
    return episodes, dropped
