"""Multi-task replay: even splits across tasks, correct task labels, padded actions, clear errors.

Frames carry the task index in pixel (0,0) and the step in pixel (0,1), so every row's origin decodes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from atcrl.data.episode import Episode
from atcrl.data.multitask import MultiTaskReplay
from atcrl.data.replay import Replay


def episode(task: int, T: int, action_dim: int, frame_shape=(1, 4, 4)) -> Episode:
    frames = np.zeros((T + 1, *frame_shape), np.uint8)
    frames[:, 0, 0, 0], frames[:, 0, 0, 1] = task, np.arange(T + 1)
    return Episode(
        frames=frames,
        actions=np.full((T, action_dim), task + 1, np.float32),
        rewards=np.full(T, float(task), np.float32),
        terminated=False,
        truncated=True,
        task=f"task{task}",
    )


def task_of_rows(stacks: torch.Tensor) -> list[int]:
    return stacks[..., -1, 0, 0].tolist()


@pytest.fixture
def multi() -> MultiTaskReplay:
    # Interleaved episodes of three tasks with action sizes 1, 3 and 2.
    dims = [1, 3, 2]
    eps = [episode(task, 6 + task, dims[task]) for _ in range(3) for task in range(3)]
    return MultiTaskReplay.from_episodes(eps, frame_stack=2)


def test_from_episodes_groups_by_task(multi: MultiTaskReplay) -> None:
    assert multi.task_names == ["task0", "task1", "task2"]
    assert [len(r) for r in multi.replays] == [3 * 7, 3 * 8, 3 * 9]
    assert multi.num_transitions == 3 * (6 + 7 + 8) and len(multi) == 3 * (7 + 8 + 9)
    assert multi.action_shape == (3,)


def test_batches_split_evenly_and_remainder_spreads(multi: MultiTaskReplay) -> None:
    rng = np.random.default_rng(0)
    got_extra = np.zeros(3, int)
    for _ in range(60):
        b = multi.sample_pairs(10, rng, delta_t=1)
        counts = np.bincount(b.task.numpy(), minlength=3)
        assert counts.sum() == 10 and set(counts) <= {3, 4}
        got_extra += counts == 4
        assert task_of_rows(b.anchor) == b.task.tolist()  # the label names the replay the row came from
        assert task_of_rows(b.positive) == b.task.tolist()
    assert (got_extra > 5).all(), got_extra


def test_anchor_runs_are_split_whole_across_tasks(multi: MultiTaskReplay) -> None:
    """Sequence sampling over several tasks: each task gets whole runs (3 runs of 4 over 3 tasks: one each),
    and every run is 4 consecutive steps of one task's replay."""
    rng = np.random.default_rng(0)
    for _ in range(10):
        b = multi.sample_pairs(12, rng, delta_t=1, run=4)
        assert np.bincount(b.task.numpy(), minlength=3).tolist() == [4, 4, 4]
        steps = b.anchor[:, -1, 0, 1].view(3, 4)
        assert ((steps[:, 1:] - steps[:, :-1] == 1) | (steps[:, 1:] == 0)).all()
    with pytest.raises(ValueError, match="pick a multiple of 4"):
        multi.sample_pairs(10, rng, delta_t=1, run=4)


def test_online_ul_shares_whole_runs_over_its_replays() -> None:
    """PPO's online UL samples one share per env replay; with sequence sampling the shares are whole sequences."""
    from atcrl.nets.encoders import ConvEncoder
    from atcrl.train.online_ul import OnlineUL
    from atcrl.ul.atc import ATC, ATCConfig
    from atcrl.ul.optim import ULOptimConfig

    replays = [Replay.from_episodes([episode(task, 30, 1, (1, 32, 32))], frame_stack=2) for task in range(3)]
    cfg = ATCConfig(batch_size=32, sampling="sequences", sequence_length=8, latent_size=8, predictor_hidden=8)
    ul = OnlineUL(ATC(ConvEncoder("dmc", (2, 32, 32)), cfg), replays, ULOptimConfig(), None, "cpu")
    for _ in range(2):  # the second sample refills the first one's buffer
        b = ul.sample(np.random.default_rng(0))
        assert task_of_rows(b.anchor) == [0] * 16 + [1] * 8 + [2] * 8  # 4 runs of 8: 2, 1, 1
        steps = b.anchor[:, -1, 0, 1].view(4, 8)
        assert (steps[:, 1:] - steps[:, :-1] == 1).all()


def test_transitions_pad_actions_of_smaller_tasks(multi: MultiTaskReplay) -> None:
    b = multi.sample_transitions(9, np.random.default_rng(1), n_step=2)
    assert b.action.shape == (9, 3)
    dims = [1, 3, 2]
    for action, task in zip(b.action.tolist(), b.task.tolist()):
        assert action == [task + 1] * dims[task] + [0] * (3 - dims[task])
    assert task_of_rows(b.next_obs) == b.task.tolist()
    steps = (b.next_obs[:, -1, 0, 1] - b.obs[:, -1, 0, 1]).numpy()  # n' (< 2 at an episode's last step)
    assert set(steps) <= {1, 2}
    np.testing.assert_allclose(b.reward.numpy(), b.task.numpy() * np.where(steps == 2, 1.99, 1.0), rtol=1e-6)


def test_sequences_concatenate_along_the_batch_axis(multi: MultiTaskReplay) -> None:
    b = multi.sample_sequences(7, np.random.default_rng(2), length=4)
    assert b.obs.shape == (4, 7, 2, 4, 4) and b.valid.shape == (4, 7) and b.action.shape == (4, 7, 3)
    for j in range(4):
        assert task_of_rows(b.obs[j]) == b.task.tolist()


def test_errors_name_the_task() -> None:
    small = Replay.from_episodes([episode(0, 2, 1)], frame_stack=1)
    big = Replay.from_episodes([episode(1, 20, 1)], frame_stack=1)
    multi = MultiTaskReplay([small, big], ["tiny", "large"])
    with pytest.raises(ValueError, match="task 'tiny': batch size 5 is larger than the 3 observations"):
        multi.sample_pairs(10, np.random.default_rng(0), delta_t=0)
    other_shape = Replay.from_episodes([episode(0, 2, 1, frame_shape=(3, 4, 4))], frame_stack=1)
    with pytest.raises(ValueError, match="task '1' stores"):
        MultiTaskReplay([small, other_shape])
    with pytest.raises(ValueError, match="at least one replay"):
        MultiTaskReplay([])
