"""DeviceReplay against the host Replay: the same anchors give the same transitions, the same pool, on CPU.

The device replay's indexing logic runs here with device="cpu": every table and every index
computation is the same torch code that runs on a GPU.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atcrl.data.device_replay import DeviceReplay
from atcrl.data.replay import Replay
from atcrl.data.replay_index import STEP

FRAME = (2, 5, 4)


def _fill(capacity: int, frame_stack: int, seed: int, steps: int = 120):
    """The same random stream of episodes (terminals, truncations, resets mid-episode) into both replays."""
    rng = np.random.default_rng(seed)
    host = Replay(capacity, FRAME, frame_stack=frame_stack, action_shape=(3,))
    dev = DeviceReplay(capacity, FRAME, frame_stack=frame_stack, action_shape=(3,))
    open_ = False
    for _ in range(steps):
        if not open_ or rng.random() < 0.03:  # a reset while open cuts the episode
            f = rng.integers(0, 255, FRAME, dtype=np.uint8)
            host.add_first(f)
            dev.add_first(f)
            open_ = True
            continue
        a, r, f = rng.normal(size=3).astype(np.float32), float(rng.normal()), rng.integers(0, 255, FRAME, dtype=np.uint8)
        term, trunc = bool(rng.random() < 0.08), bool(rng.random() < 0.05)
        host.add_step(a, r, f, term, trunc)
        dev.add_step(a, r, f, term, trunc)
        open_ = not (term or trunc)
    return host, dev


class _FixedChoice:
    """A numpy-generator stand-in whose ``choice`` returns given pool positions (to pin the anchors)."""

    def __init__(self, picks: np.ndarray):
        self.picks = picks

    def choice(self, n, size, replace):
        assert not replace and size == len(self.picks) and self.picks.max() < n
        return self.picks


@pytest.mark.parametrize("capacity,frame_stack,seed", [(500, 3, 0), (37, 3, 1), (23, 1, 2), (41, 4, 3)])
@pytest.mark.parametrize("n_step", [1, 3])
def test_same_anchors_give_the_same_transitions(capacity, frame_stack, seed, n_step):
    host, dev = _fill(capacity, frame_stack, seed)
    assert host.num_transitions == dev.num_transitions
    ring = host._ring()
    pool_slots = ring.slots(ring.anchor_pool(STEP))
    # The anchor pool is the same set of slots (wrapped rings included: capacity < steps).
    assert sorted(pool_slots.tolist()) == torch.nonzero(dev.anchor_mask()).squeeze(1).tolist()
    picks = np.random.default_rng(seed).permutation(len(pool_slots))[: min(16, len(pool_slots))]
    expected = host.sample_transitions(len(picks), _FixedChoice(picks), n_step=n_step, gamma=0.9)
    got = dev.transitions_at(torch.from_numpy(pool_slots[picks]), n_step=n_step, gamma=0.9)
    for name in ("obs", "action", "reward", "discount", "next_obs", "task"):
        a, b = getattr(expected, name), getattr(got, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert torch.equal(a, b), name


def test_sampled_anchors_are_distinct_and_allowed():
    _, dev = _fill(60, 3, 4, steps=300)
    allowed = set(torch.nonzero(dev.anchor_mask()).squeeze(1).tolist())
    gen = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(50):
        slots = dev.draw(8, gen).tolist()
        assert len(set(slots)) == 8 and set(slots) <= allowed
        seen |= set(slots)
    assert seen == allowed  # uniform over the pool: 400 draws from ~40 anchors reach all of them


def test_sample_is_uniform_over_the_pool():
    _, dev = _fill(1000, 1, 5, steps=200)
    allowed = torch.nonzero(dev.anchor_mask()).squeeze(1)
    gen = torch.Generator().manual_seed(1)
    counts = torch.zeros(dev.capacity)
    for _ in range(2000):
        counts[dev.draw(4, gen)] += 1
    hits = counts[allowed]
    assert counts.sum() == hits.sum()  # nothing outside the pool
    expected = 8000 / len(allowed)
    assert ((hits - expected).abs() < 5 * expected**0.5).all()  # every anchor within 5 sigma of uniform


def test_sample_transitions_fixed_shapes_and_errors():
    _, dev = _fill(100, 3, 6)
    batch = dev.sample_transitions(16, torch.Generator().manual_seed(0), n_step=2)
    assert batch.obs.shape == (16, 6, 5, 4) and batch.next_obs.shape == (16, 6, 5, 4)
    assert batch.action.shape == (16, 3) and batch.reward.shape == batch.discount.shape == (16,)
    with pytest.raises(ValueError, match="larger than"):
        dev.sample_transitions(dev.num_transitions + 1)
    with pytest.raises(ValueError, match="obs\\[-2:\\]"):
        dev.add_first(np.zeros((4, 5, 4), np.uint8))
    with pytest.raises(ValueError, match="add_first"):
        DeviceReplay(10, FRAME, frame_stack=1).add_step(0.0, 0.0, np.zeros(FRAME, np.uint8), False, False)


def test_state_dict_round_trip_continues_identically():
    _, a = _fill(37, 3, 7)
    b = DeviceReplay(37, FRAME, frame_stack=3, action_shape=(3,))
    b.load_state_dict(a.state_dict())
    assert a.num_transitions == b.num_transitions and len(a) == len(b)
    ga, gb = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    x, y = a.sample_transitions(8, ga), b.sample_transitions(8, gb)
    assert all(torch.equal(getattr(x, k), getattr(y, k)) for k in ("obs", "action", "reward", "next_obs"))
    f = np.full(FRAME, 7, np.uint8)
    for r in (a, b):  # both keep writing the same way
        r.add_step(np.ones(3, np.float32), 1.0, f, False, True)
    assert a.num_transitions == b.num_transitions
    assert torch.equal(a.step, b.step) and torch.equal(a.last, b.last)


def test_state_is_the_host_replay_checkpoint_layout():
    """A replay checkpointed on the device resumes on the host and back (same keys, dtypes and contents)."""
    host, dev = _fill(37, 3, 8)
    saved_dev, saved_host = dev.state_dict(), host.state_dict()
    assert saved_dev.keys() == saved_host.keys()
    for k, v in saved_host.items():
        if torch.is_tensor(v):
            assert saved_dev[k].dtype == v.dtype and torch.equal(saved_dev[k], v), k
        else:
            assert saved_dev[k] == v, k
    fresh_host = Replay(37, FRAME, frame_stack=3, action_shape=(3,))
    fresh_host.load_state_dict(saved_dev)
    assert fresh_host.num_transitions == host.num_transitions
    fresh_dev = DeviceReplay(37, FRAME, frame_stack=3, action_shape=(3,))
    fresh_dev.load_state_dict(saved_host)
    assert torch.equal(fresh_dev.anchor_mask(), dev.anchor_mask()) and fresh_dev._episode_step == dev._episode_step


@pytest.mark.parametrize("capacity,frame_stack,seed", [(500, 3, 0), (37, 3, 1), (41, 4, 3)])
@pytest.mark.parametrize("delta_t", [0, 1, 3])
def test_same_anchors_give_the_same_pairs(capacity, frame_stack, seed, delta_t):
    from atcrl.data.replay_index import OBS

    host, dev = _fill(capacity, frame_stack, seed)
    ring = host._ring()
    pool_slots = ring.slots(ring.anchor_pool(OBS))
    assert sorted(pool_slots.tolist()) == torch.nonzero(dev.anchor_mask("obs")).squeeze(1).tolist()
    picks = np.random.default_rng(seed).permutation(len(pool_slots))[:16]
    expected = host.sample_pairs(len(picks), _FixedChoice(picks), delta_t=delta_t)
    got = dev.pairs_at(torch.from_numpy(pool_slots[picks]), delta_t=delta_t)
    for name in ("anchor", "positive", "valid", "actions", "task"):
        a, b = getattr(expected, name), getattr(got, name)
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), name
    batch = dev.sample_pairs(8, torch.Generator().manual_seed(0), delta_t=delta_t)
    assert batch.anchor.shape == (8, frame_stack * FRAME[0], *FRAME[1:]) and batch.actions.shape == (8, delta_t, 3)


@pytest.mark.parametrize("capacity,frame_stack,seed", [(500, 3, 0), (37, 3, 1), (41, 4, 3)])
def test_anchor_runs_on_the_device_match_the_host(capacity, frame_stack, seed):
    """Sequence sampling (runs of consecutive anchors): the same run starts are allowed on both replays, and the
    same starts give the same batch; a run never reaches past the newest slot."""
    from atcrl.data.replay_index import OBS

    run, delta_t = 5, 3
    host, dev = _fill(capacity, frame_stack, seed)
    ring = host._ring()
    pool_slots = ring.slots(ring.anchor_pool(OBS, run))
    rel = dev.rel(dev._slots)
    allowed = dev.anchor_mask("obs") & (rel < dev.size - (run - 1))
    assert sorted(pool_slots.tolist()) == torch.nonzero(allowed).squeeze(1).tolist()
    picks = np.random.default_rng(seed).permutation(len(pool_slots))[:4]
    expected = host.sample_pairs(len(picks) * run, _FixedChoice(picks), delta_t=delta_t, run=run)
    starts = torch.from_numpy(pool_slots[picks])
    got = dev.pairs_at((starts[:, None] + torch.arange(run)).reshape(-1) % capacity, delta_t=delta_t)
    for name in ("anchor", "positive", "valid", "actions", "task"):
        a, b = getattr(expected, name), getattr(got, name)
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), name
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        starts = dev.draw(4, gen, "obs", run)
        assert set(starts.tolist()) <= set(pool_slots.tolist())
    batch = dev.sample_pairs(4 * run, gen, delta_t=delta_t, run=run)
    assert batch.anchor.shape == (4 * run, frame_stack * FRAME[0], *FRAME[1:])
    with pytest.raises(ValueError, match="pick a multiple of 5"):
        dev.sample_pairs(7, gen, delta_t=delta_t, run=run)
