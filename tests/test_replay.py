"""Replay storage and samplers checked against a naive per-episode reference.

Every frame is 1x4x4 with pixel (0,0) = episode id and pixel (0,1) = step t, so a test can decode
exactly which stored frame each sampled stack slot came from. Actions are [e, t] and rewards
e + t / 10, so they decode too.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from atcrl.data.episode import Episode, stack_indices
from atcrl.data.replay import Replay

FRAME = (1, 4, 4)


def frame(e: int, t: int) -> np.ndarray:
    f = np.zeros(FRAME, np.uint8)
    f[0, 0, 0], f[0, 0, 1] = e, t
    return f


def make_episode(e: int, T: int, ending: str) -> Episode:
    return Episode(
        frames=np.stack([frame(e, t) for t in range(T + 1)]),
        actions=np.stack([np.full(T, e), np.arange(T)], 1).astype(np.float32),
        rewards=(e + np.arange(T) / 10).astype(np.float32),
        terminated=ending == "terminated",
        truncated=ending == "truncated",
    )


def decode(stacks: torch.Tensor) -> np.ndarray:
    """[..., k*1, 4, 4] stacks → [..., k, 2] (episode, t) per stacked frame, oldest first."""
    s = stacks.numpy()
    return np.stack([s[..., :, 0, 0], s[..., :, 0, 1]], -1).astype(int)


@dataclass
class Scenario:
    """What was added, and what a correct replay must therefore hold."""

    replay: Replay
    episodes: dict[int, Episode]
    survivors: list[tuple[int, int]]  # stored (e, t), oldest first
    k: int

    def hi(self, e: int) -> int:
        return max(t for ee, t in self.survivors if ee == e)

    def stored(self, e: int, t: int) -> bool:
        return (e, t) in self._set

    def __post_init__(self) -> None:
        self._set = set(self.survivors)

    def stack(self, e: int, t: int) -> list[tuple[int, int]]:
        return [(e, int(i)) for i in stack_indices(np.array(t), self.k)]

    def obs_anchors(self) -> set[tuple[int, int]]:
        return {(e, t) for e, t in self.survivors if all(self.stored(*f) for f in self.stack(e, t))}

    def step_anchors(self) -> set[tuple[int, int]]:
        return {(e, t) for e, t in self.obs_anchors() if t < self.hi(e)}

    def span(self) -> int:
        return max((self.hi(e) - t for e, t in self.obs_anchors()), default=-1)

    def check_stacks(self, stacks: torch.Tensor, at: list[tuple[int, int]]) -> None:
        got = decode(stacks).reshape(len(at), self.k, 2)
        for row, (e, t) in zip(got, at):
            assert [tuple(x) for x in row] == self.stack(e, t)
            assert all(self.stored(*x) for x in row), "read an overwritten slot"


@st.composite
def scenarios(draw) -> Scenario:
    k = draw(st.integers(1, 4))
    capacity = draw(st.integers(2, 40))
    specs = draw(
        st.lists(
            st.tuples(st.integers(0, 7), st.sampled_from(["terminated", "truncated", "cut"]), st.booleans()),
            min_size=1,
            max_size=8,
        )
    )
    replay = Replay(capacity, FRAME, frame_stack=k, action_shape=(2,))
    episodes, slots = {}, []
    for e, (T, ending, stepwise) in enumerate(specs, start=1):
        ep = episodes[e] = make_episode(e, T, ending)
        slots += [(e, t) for t in range(T + 1)]
        if not stepwise:
            replay.add_episode(ep)
            continue
        # Step-wise "cut" episodes stay open until the next episode starts (the last one stays open).
        replay.add_first(ep.frames[0])
        for t in range(T):
            done_now = t == T - 1
            replay.add_step(
                ep.actions[t],
                ep.rewards[t],
                ep.frames[t + 1],
                ep.terminated and done_now,
                ep.truncated and done_now,
            )
    return Scenario(replay, episodes, slots[-capacity:], k)


@settings(max_examples=150, deadline=None)
@given(sc=scenarios(), delta_t=st.integers(0, 4), seed=st.integers(0, 2**16))
def test_pairs_never_cross_episodes_and_valid_is_exact(sc: Scenario, delta_t: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    if delta_t > sc.span():
        with pytest.raises(ValueError, match="longer than every stored episode"):
            sc.replay.sample_pairs(1, rng, delta_t=delta_t)
        return
    anchors = sc.obs_anchors()
    b = sc.replay.sample_pairs(len(anchors), rng, delta_t=delta_t)
    at = [tuple(x) for x in decode(b.anchor)[:, -1]]
    assert set(at) == anchors  # without replacement, a full batch is every sampleable anchor
    sc.check_stacks(b.anchor, at)
    positives = [(e, min(t + delta_t, sc.hi(e))) for e, t in at]
    sc.check_stacks(b.positive, positives)
    assert b.valid.tolist() == [t + delta_t <= sc.hi(e) for e, t in at]
    assert b.actions.shape == (len(at), delta_t, 2)
    for row, (e, t) in zip(b.actions.numpy(), at):
        expected = [[e, t + j] if t + j < sc.hi(e) else [0, 0] for j in range(delta_t)]
        assert row.reshape(delta_t, 2).tolist() == expected
    with pytest.raises(ValueError, match=f"batch size {len(anchors) + 1} is larger than the {len(anchors)}"):
        sc.replay.sample_pairs(len(anchors) + 1, rng, delta_t=delta_t)


@settings(max_examples=150, deadline=None)
@given(sc=scenarios(), delta_t=st.integers(0, 4), run=st.integers(2, 5), seed=st.integers(0, 2**16))
def test_anchor_runs_are_consecutive_before_the_cursor_and_masked_per_step(
    sc: Scenario, delta_t: int, run: int, seed: int
) -> None:
    """Sequence sampling: each run is ``run`` consecutive stored observations (it may cross an episode end, never
    the write cursor); every step's positive and mask are those of an independent pair at that step."""
    rng = np.random.default_rng(seed)
    if delta_t > sc.span():
        return  # the pair test covers the error
    order = sc.survivors  # stored (e, t), oldest first: consecutive slots of the ring
    starts = [p for p in range(len(order) - run + 1) if order[p] in sc.obs_anchors()]
    if not starts:
        with pytest.raises(ValueError, match=f"starts of {run}-step anchor runs"):
            sc.replay.sample_pairs(run, rng, delta_t=delta_t, run=run)
        return
    b = sc.replay.sample_pairs(len(starts) * run, rng, delta_t=delta_t, run=run)
    at = [tuple(x) for x in decode(b.anchor)[:, -1]]
    runs = [at[i : i + run] for i in range(0, len(at), run)]
    # Without replacement, a full batch is every allowed run start, each followed by its next run - 1 slots.
    assert sorted(order.index(r[0]) for r in runs) == starts
    for r in runs:
        p = order.index(r[0])
        assert r == order[p : p + run]
    sc.check_stacks(b.anchor, at)
    sc.check_stacks(b.positive, [(e, min(t + delta_t, sc.hi(e))) for e, t in at])
    assert b.valid.tolist() == [t + delta_t <= sc.hi(e) for e, t in at]
    with pytest.raises(ValueError, match=f"pick a multiple of {run}"):
        sc.replay.sample_pairs(run + 1, rng, delta_t=delta_t, run=run)


def test_anchor_runs_hand_computed_example() -> None:
    """Two episodes of 5 and 3 steps (6 + 4 = 10 slots), Δt 2, one run of 4 from slot 3, crossing the first end:
    anchors (1,3) (1,4) (1,5) (2,0); positives (1,5) (1,5) (1,5) (2,2); valid only where t + 2 stays in the
    episode: (1,3) yes, (1,4) no, (1,5) no, (2,0) yes."""
    replay = Replay(16, FRAME, frame_stack=1, action_shape=(2,))
    replay.add_episode(make_episode(1, 5, "terminated"))
    replay.add_episode(make_episode(2, 3, "truncated"))
    b = replay.sample_pairs(4, _Pick([3]), delta_t=2, run=4)
    assert [tuple(x) for x in decode(b.anchor)[:, -1]] == [(1, 3), (1, 4), (1, 5), (2, 0)]
    assert [tuple(x) for x in decode(b.positive)[:, -1]] == [(1, 5), (1, 5), (1, 5), (2, 2)]
    assert b.valid.tolist() == [True, False, False, True]
    # Actions a_t, a_{t+1} within the episode, zero past its end (the final observation has none).
    assert b.actions.tolist() == [[[1, 3], [1, 4]], [[1, 4], [0, 0]], [[0, 0], [0, 0]], [[2, 0], [2, 1]]]
    # The last run that fits ends at the newest slot (rel 9): starts 0..6 of 10 slots.
    assert replay._ring().anchor_pool("obs", 4).tolist() == list(range(7))


class _Pick:
    """A numpy-generator stand-in whose ``choice`` returns given pool positions."""

    def __init__(self, picks: list[int]):
        self.picks = np.array(picks)

    def choice(self, n, size, replace):
        assert not replace and size == len(self.picks) and self.picks.max() < n
        return self.picks


@settings(max_examples=150, deadline=None)
@given(sc=scenarios(), n_step=st.integers(1, 4), gamma=st.floats(0.5, 1.0), seed=st.integers(0, 2**16))
def test_n_step_transitions_match_naive_reference(sc: Scenario, n_step: int, gamma: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    anchors = sc.step_anchors()
    assert sc.replay.num_transitions == sum(t < sc.hi(e) for e, t in sc.survivors)
    b = sc.replay.sample_transitions(len(anchors), rng, n_step=n_step, gamma=gamma)
    at = [tuple(x) for x in decode(b.obs)[:, -1]]
    assert set(at) == anchors
    sc.check_stacks(b.obs, at)
    n = [min(n_step, sc.hi(e) - t) for e, t in at]
    sc.check_stacks(b.next_obs, [(e, t + m) for (e, t), m in zip(at, n)])
    for i, ((e, t), m) in enumerate(zip(at, n)):
        ep = sc.episodes[e]
        assert b.action[i].tolist() == [e, t]
        assert b.reward[i].item() == pytest.approx(
            sum(gamma**j * ep.rewards[t + j] for j in range(m)), rel=1e-5
        )
        terminal = ep.terminated and t + m == len(ep)
        assert b.discount[i].item() == pytest.approx(0.0 if terminal else gamma**m, rel=1e-6)
    assert (b.task == 0).all()
    with pytest.raises(ValueError, match="batch size"):
        sc.replay.sample_transitions(len(anchors) + 1, rng)


@settings(max_examples=150, deadline=None)
@given(sc=scenarios(), length=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_sequences_stay_in_episode_and_before_cursor(sc: Scenario, length: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    if length > len(sc.survivors) or length > sc.span():
        with pytest.raises(ValueError, match="sequence length"):
            sc.replay.sample_sequences(1, rng, length=length)
        return
    position = {x: i for i, x in enumerate(sc.survivors)}
    starts = {x for x in sc.step_anchors() if position[x] + length <= len(sc.survivors)}
    b = sc.replay.sample_sequences(len(starts), rng, length=length)
    assert b.obs.shape == (length, len(starts), sc.k, 4, 4)
    at = [tuple(x) for x in decode(b.obs[0])[:, -1]]
    assert set(at) == starts
    for j in range(length):
        sc.check_stacks(b.obs[j], [(e, min(t + j, sc.hi(e))) for e, t in at])
        valid = [t + j < sc.hi(e) for e, t in at]
        assert b.valid[j].tolist() == valid
        expected_actions = [[e, t + j] if v else [0, 0] for (e, t), v in zip(at, valid)]
        assert b.action[j].tolist() == expected_actions
        expected_rewards = [sc.episodes[e].rewards[t + j] if v else 0.0 for (e, t), v in zip(at, valid)]
        np.testing.assert_allclose(b.reward[j].numpy(), expected_rewards, rtol=1e-6)


class CountingPixels(gym.Env):
    """A real gymnasium env whose frames show (episode, t); episodes end after a random 1-6 steps."""

    observation_space = gym.spaces.Box(0, 255, FRAME, np.uint8)
    action_space = gym.spaces.Discrete(2)

    def __init__(self) -> None:
        self.episode, self.t, self.length = 0, 0, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode, self.t = self.episode + 1, 0
        self.length = int(self.np_random.integers(1, 7))
        return frame(self.episode, 0), {}

    def step(self, action):
        self.t += 1
        done = self.t == self.length
        return frame(self.episode, self.t), 1.0, done and action == 1, done and action == 0, {}


@pytest.mark.parametrize("k", [1, 3, 4])
@pytest.mark.parametrize("capacity", [200, 17])
def test_stacks_equal_gymnasium_frame_stack(k: int, capacity: int) -> None:
    env = gym.wrappers.FrameStackObservation(CountingPixels(), k)
    replay = Replay(capacity, FRAME, frame_stack=k)
    seen = {}

    def record(obs: np.ndarray) -> None:
        seen[tuple(decode(torch.from_numpy(obs.reshape(k, 4, 4)))[-1])] = obs.reshape(k, 4, 4)

    obs, _ = env.reset(seed=0)
    replay.add_first(obs[-1])  # a stacked observation's newest frame is its last C channels
    record(obs)
    for _ in range(60):
        action = env.action_space.sample()
        obs, reward, terminated, truncated, _ = env.step(action)
        replay.add_step(action, reward, obs[-1], terminated, truncated)
        record(obs)
        if terminated or truncated:
            obs, _ = env.reset()
            replay.add_first(obs[-1])
            record(obs)
    # Only stacks reaching past the oldest slot may be excluded, so this many anchors must exist.
    b = replay.sample_pairs(len(replay) - (k - 1), np.random.default_rng(0), delta_t=0)
    for stack in b.anchor.numpy():
        np.testing.assert_array_equal(stack, seen[tuple(decode(torch.from_numpy(stack))[-1])])


def test_terminal_stops_bootstrap_but_truncation_keeps_it() -> None:
    gamma = 0.9
    for ending, final_discount in [("terminated", 0.0), ("truncated", gamma**2)]:
        replay = Replay.from_episodes([make_episode(1, 3, ending)], frame_stack=2)
        b = replay.sample_transitions(3, np.random.default_rng(0), n_step=5, gamma=gamma)
        from_t1 = decode(b.obs)[:, -1, 1].tolist().index(1)
        assert b.reward[from_t1].item() == pytest.approx(1.1 + gamma * 1.2)
        assert b.discount[from_t1].item() == pytest.approx(final_discount)
        assert decode(b.next_obs)[from_t1, -1].tolist() == [1, 3]


def test_add_episode_equals_step_by_step_adds() -> None:
    episodes = [
        make_episode(e, T, end) for e, (T, end) in enumerate([(5, "terminated"), (9, "truncated")], 1)
    ]
    bulk = Replay.from_episodes(episodes, frame_stack=3, capacity=12)
    steps = Replay(12, FRAME, frame_stack=3, action_shape=(2,))
    for ep in episodes:
        steps.add_first(ep.frames[0])
        for t in range(len(ep)):
            end = t == len(ep) - 1
            steps.add_step(
                ep.actions[t], ep.rewards[t], ep.frames[t + 1], ep.terminated and end, ep.truncated and end
            )
    for name in ["frames", "actions", "rewards", "_step", "_last", "_terminal"]:
        np.testing.assert_array_equal(getattr(bulk, name), getattr(steps, name), err_msg=name)
    a, b = (r.sample_pairs(6, np.random.default_rng(3), delta_t=2) for r in (bulk, steps))
    assert torch.equal(a.anchor, b.anchor) and torch.equal(a.positive, b.positive)


def test_memory_is_single_frames_plus_small_metadata() -> None:
    replay = Replay(1000, (3, 84, 84), frame_stack=3, action_shape=(6,), physics_dim=10)
    frame_bytes = 1000 * 3 * 84 * 84
    assert replay.frames.shape == (1000, 3, 84, 84)  # not stacked
    assert frame_bytes < replay.nbytes < frame_bytes + 1000 * (6 * 4 + 10 * 8 + 16)


def test_out_buffers_are_filled_in_place_and_match() -> None:
    replay = Replay.from_episodes([make_episode(e, 6, "truncated") for e in (1, 2, 3)], frame_stack=3)
    fresh = replay.sample_pairs(8, np.random.default_rng(5), delta_t=2)
    buffers = replay.sample_pairs(8, np.random.default_rng(9), delta_t=2)
    anchor_storage = buffers.anchor.data_ptr()
    filled = replay.sample_pairs(8, np.random.default_rng(5), delta_t=2, out=buffers)
    assert filled.anchor.data_ptr() == anchor_storage
    for name in ["anchor", "positive", "valid", "actions"]:
        assert torch.equal(getattr(filled, name), getattr(fresh, name)), name
    fresh_t = replay.sample_transitions(4, np.random.default_rng(1), n_step=2)
    out_t = replay.sample_transitions(4, np.random.default_rng(2), n_step=2)
    replay.sample_transitions(4, np.random.default_rng(1), n_step=2, out=out_t)
    assert torch.equal(out_t.next_obs, fresh_t.next_obs) and torch.equal(out_t.reward, fresh_t.reward)
    with pytest.raises(ValueError, match="out buffer"):
        replay.sample_pairs(7, np.random.default_rng(5), delta_t=2, out=buffers)


def test_float_latent_frames() -> None:
    latents = np.random.default_rng(0).standard_normal((5, 32, 7, 7)).astype(np.float16)
    ep = Episode(latents, np.zeros((4, 1), np.float32), np.ones(4, np.float32), False, True)
    replay = Replay.from_episodes([ep], frame_stack=1)
    b = replay.sample_transitions(4, np.random.default_rng(0))
    assert b.obs.dtype == torch.float16 and b.obs.shape == (4, 32, 7, 7)
    assert {float(x.sum()) for x in b.next_obs} <= {float(torch.from_numpy(x).sum()) for x in latents[1:]}


def test_from_episodes_streams_into_a_fixed_capacity() -> None:
    replay = Replay.from_episodes(
        (make_episode(e, 4, "truncated") for e in range(1, 6)), frame_stack=1, capacity=12
    )
    assert len(replay) == 12 and replay.num_transitions == 4 + 4 + 1  # 2 full episodes + a 2-slot tail
    b = replay.sample_pairs(12, np.random.default_rng(0), delta_t=0)
    assert sorted(set(decode(b.anchor)[:, -1, 0].tolist())) == [3, 4, 5]


def test_clear_errors_on_bad_input() -> None:
    rng = np.random.default_rng(0)
    replay = Replay(10, FRAME, frame_stack=3, action_shape=(2,))
    with pytest.raises(ValueError, match="empty replay"):
        replay.sample_pairs(1, rng, delta_t=1)
    with pytest.raises(ValueError, match="add_first"):
        replay.add_step(np.zeros(2), 0.0, frame(1, 1), False, False)
    with pytest.raises(ValueError, match=r"newest frame, obs\[-1:\]"):
        replay.add_first(np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="dtype uint8"):
        replay.add_first(np.zeros(FRAME, np.float32))
    replay.add_first(frame(1, 0))
    with pytest.raises(ValueError, match=r"action must have shape \(2,\)"):
        replay.add_step(np.zeros(3), 0.0, frame(1, 1), False, False)
    replay.add_step(np.zeros(2), 0.0, frame(1, 1), False, True)
    with pytest.raises(
        ValueError, match=r"delta_t=2 is longer than every stored episode \(the longest offers 1"
    ):
        replay.sample_pairs(1, rng, delta_t=2)
    with pytest.raises(ValueError, match="sequence length 2 is longer than every stored episode"):
        replay.sample_sequences(1, rng, length=2)
    with pytest.raises(ValueError, match="sequence length 30 exceeds the 2 slots stored"):
        replay.sample_sequences(1, rng, length=30)
    with pytest.raises(
        ValueError, match=r"batch size 3 is larger than the 2 observations available \(2 slots"
    ):
        replay.sample_pairs(3, rng, delta_t=0)
    discrete = Replay(10, FRAME, frame_stack=1, action_dtype=np.int64)
    discrete.add_first(frame(1, 0))
    with pytest.raises(ValueError, match="cannot be stored as int64"):
        discrete.add_step(np.float32(0.5), 0.0, frame(1, 1), False, False)
