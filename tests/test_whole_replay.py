"""`atcrl collect --whole-replay`: a run's checkpointed training replay written as the dataset, equal to the
replay's content slot for slot (frames, actions, rewards, episode ends), for the DQN expert (one replay per env)
and the SAC expert; a wrapped ring drops its partial first episode, the open episode is written truncated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from atcrl.checkpoint import load_checkpoint
from atcrl.cli import main as atcrl
from atcrl.data.dataset import open_dataset, read_meta, validate_dataset
from atcrl.data.replay import Replay, episodes_of_state
from atcrl.train.collect import CollectConfig

DQN = ["--preset", "tiny-dqn", "--dqn.num-envs", "2", "--dqn.warmup-steps", "60", "--dqn.batch-size", "8",
       "--dqn.agent.hidden", "16", "--eval-episodes", "0", "--no-tensorboard", "--device", "cpu"]
SAC = ["--preset", "dmc-rad", "--env", "tiny:point", "--sac.image-size", "32", "--sac.frame-stack", "1",
       "--sac.warmup-steps", "40", "--sac.batch-size", "8", "--sac.agent.hidden", "16", "16",
       "--sac.agent.latent-dim", "8", "--eval-episodes", "0", "--no-tensorboard", "--device", "cpu"]


def fill(replay: Replay, lengths: list[int], open_steps: int) -> list[tuple[list[int], bool]]:
    """Episodes of the given lengths (frame values count up; even ones terminate, odd ones are cut), then one
    left open; returns each episode's frame values and whether it terminated."""
    value, made = 0, []
    for i, n in enumerate([*lengths, open_steps]):
        frames = [value]
        replay.add_first(np.full(replay.frame_shape, value % 256, np.uint8))
        for t in range(n):
            value += 1
            frames.append(value)
            end = t == n - 1 and i < len(lengths)
            replay.add_step(value % 3, float(value), np.full(replay.frame_shape, value % 256, np.uint8),
                            terminated=end and i % 2 == 0, truncated=end and i % 2 == 1)
        made.append((frames, i % 2 == 0 and i < len(lengths)))
        value += 1
    return made


@pytest.mark.parametrize("capacity", [64, 26])
def test_episodes_of_a_replay_state_are_its_episodes_and_a_wrapped_ring_drops_its_partial_first_one(capacity):
    replay = Replay(capacity, (1, 2, 2), frame_stack=2, action_dtype=np.int64)
    made = fill(replay, [5, 7, 4, 6], open_steps=3)  # 5 episodes: 6 + 8 + 5 + 7 + 4 = 30 slots written
    episodes, dropped = episodes_of_state(replay.state_dict(), task="t")
    if capacity == 64:  # not full: everything comes back
        assert dropped == 0 and len(episodes) == 5
        kept = made
    else:  # 30 slots into 26: the first episode lost 4 of its 6 slots; its other 2 are dropped
        assert dropped == 2 and len(episodes) == 4
        kept = made[1:]
    for episode, (frames, terminated) in zip(episodes, kept):
        assert episode.frames[:, 0, 0, 0].tolist() == [f % 256 for f in frames]
        assert episode.actions.tolist() == [f % 3 for f in frames[1:]]
        assert episode.rewards.tolist() == [float(f) for f in frames[1:]]
        assert (episode.terminated, episode.truncated) == (terminated, not terminated) and episode.task == "t"
    assert episodes[-1].truncated and len(episodes[-1]) == 3  # the open episode, cut at its stored steps


def _ordered(state: dict, name: str) -> np.ndarray:
    size = len(state["step"])
    order = (int(state["written"]) - size + np.arange(size)) % int(state["capacity"])
    return torch.as_tensor(state[name]).numpy()[order]


def check_dataset_is_the_replay(data: Path, run: Path) -> None:
    """The dataset, episode after episode, is each saved replay's slots in order from its first episode start."""
    replays = load_checkpoint(run / "checkpoints", kind="train").state["replay"]
    assert validate_dataset(data).ok
    episodes = list(open_dataset(data))
    dropped = read_meta(data).extra["collect"]["dropped_leading_slots"]
    assert len(dropped) == len(replays)
    at = 0
    for state, lost in zip(replays, dropped):
        step, last = _ordered(state, "step")[lost:], _ordered(state, "last")[lost:]
        ends = int(last.sum()) + int(not last[-1])  # the closed episodes and the open one
        mine, at = episodes[at:at + ends], at + ends
        assert step[0] == 0 and (lost == 0 or _ordered(state, "step")[0] > 0)
        assert np.array_equal(np.concatenate([e.frames for e in mine]), _ordered(state, "frames")[lost:])
        stepped = ~last
        stepped[-1] = False  # the newest frame has no action yet (or ends an episode)
        assert np.array_equal(np.concatenate([e.actions for e in mine]), _ordered(state, "actions")[lost:][stepped])
        assert np.array_equal(np.concatenate([e.rewards for e in mine]), _ordered(state, "rewards")[lost:][stepped])
        terminal = _ordered(state, "terminal")[lost:][last]
        assert [e.terminated for e in mine[:len(terminal)]] == terminal.tolist()
    assert at == len(episodes)


def test_the_dqn_expert_replay_of_every_env_becomes_the_dataset(tmp_path, capsys):
    run, data = tmp_path / "dqn", tmp_path / "data"
    # 2 envs x 100 slots each: 400 agent steps wrap both rings (tiny:catch episodes are 9 steps, 10 slots).
    assert atcrl(["train", *DQN, "--steps", "400", "--dqn.replay-size", "200", "--checkpoint-replay",
                  "--out", str(run)]) == 0
    assert atcrl(["collect", "--checkpoint", str(run), "--whole-replay", "--out", str(data)]) == 0
    check_dataset_is_the_replay(data, run)
    meta = read_meta(data)
    assert meta.tasks == ("tiny:catch",) and meta.frame_stack == 4 and meta.num_actions == 3
    assert all(lost > 0 for lost in meta.extra["collect"]["dropped_leading_slots"])  # both rings wrapped


def test_the_sac_expert_replay_becomes_the_dataset_unwrapped_and_wrapped(tmp_path, capsys):
    for capacity in ("500", "120"):  # 130 steps: 133 slots (episodes of 50 steps)
        run, data = tmp_path / f"sac{capacity}", tmp_path / f"data{capacity}"
        assert atcrl(["train", *SAC, "--steps", "130", "--sac.replay-capacity", capacity, "--checkpoint-replay",
                      "--out", str(run)]) == 0
        assert atcrl(["collect", "--checkpoint", str(run), "--whole-replay", "--out", str(data)]) == 0
        check_dataset_is_the_replay(data, run)
        episodes = list(open_dataset(data))
        assert [len(e) for e in episodes] == ([50, 50, 30] if capacity == "500" else [50, 30])
        assert [e.truncated for e in episodes] == [True] * len(episodes)  # time limits, then the open one


def test_whole_replay_needs_a_checkpointed_replay_and_refuses_sampling_flags(tmp_path, capsys):
    run = tmp_path / "noreplay"
    assert atcrl(["train", *DQN, "--steps", "80", "--out", str(run)]) == 0
    assert atcrl(["collect", "--checkpoint", str(run), "--whole-replay", "--out", str(tmp_path / "d")]) == 2
    assert "holds no replay: train the run with `atcrl train --checkpoint-replay`" in capsys.readouterr().err
    with pytest.raises(ValueError, match="drop --episodes"):
        CollectConfig(out=str(tmp_path / "d"), checkpoint=str(run), whole_replay=True, episodes=3)
    with pytest.raises(ValueError, match="give --checkpoint RUN"):
        CollectConfig(out=str(tmp_path / "d"), env="tiny:catch", whole_replay=True)
