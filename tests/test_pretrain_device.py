"""Offline pretraining with the episodes on the compute device (``device_data``), run here on the CPU.

The device path draws its pair batches with torch's generator from a copy of the replay in device memory:
other batches than the host path, so it is checked against itself (a crash and resume reproduces the
uninterrupted run bit for bit) and for what it trains on (several tasks, shares and task ids).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_pretrain import assert_same_state, encoder_weights, final_state, record_dataset, small

from atcrl.data.device_replay import DeviceReplay
from atcrl.data.multitask import MultiTaskReplay
from atcrl.train.pretrain import load_data, run_pretrain
from atcrl.train.pretrain_step import PretrainStep


@pytest.fixture(scope="module")
def point_data(tmp_path_factory):
    return record_dataset(tmp_path_factory.mktemp("data") / "point")


def test_a_device_data_run_trains_and_resumes_exactly(point_data, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    assert run_pretrain(small(point_data, straight, device_data=True)) == 0
    host = tmp_path / "host"
    assert run_pretrain(small(point_data, host, device_data=False)) == 0
    assert not all(torch.equal(a, b) for a, b in zip(encoder_weights(straight).values(),
                                                     encoder_weights(host).values()))  # other batches

    out, real, calls = tmp_path / "crashed", PretrainStep.__call__, {"n": 0}

    def crash_at_update_13(self, update):
        calls["n"] += 1
        if calls["n"] == 13:  # after the checkpoint at update 10
            raise RuntimeError("simulated crash")
        return real(self, update)

    monkeypatch.setattr(PretrainStep, "__call__", crash_at_update_13)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_pretrain(small(point_data, out, device_data=True))
    monkeypatch.setattr(PretrainStep, "__call__", real)
    assert run_pretrain(small(point_data, out, device_data=True, resume=True)) == 0
    assert_same_state(encoder_weights(out), encoder_weights(straight))
    assert_same_state(final_state(out)["optimizer"], final_state(straight)["optimizer"])


def test_multitask_pairs_on_the_device_keep_shares_task_ids_and_padding(point_data, tmp_path):
    other = record_dataset(tmp_path / "point-b", episodes=3, seed=1, task="tiny:point-b")
    data = load_data(small((point_data, other), tmp_path / "unused"))
    on_device = data.train.to("cpu")
    assert isinstance(on_device, MultiTaskReplay) and all(isinstance(r, DeviceReplay) for r in on_device.replays)
    assert on_device.task_names == data.train.task_names and len(on_device) == len(data.train)
    torch.manual_seed(0)
    batch = on_device.sample_pairs(9, np.random.default_rng(0), delta_t=1)
    counts = torch.bincount(batch.task, minlength=2).tolist()
    assert sorted(counts) == [4, 5] and batch.task.tolist() == sorted(batch.task.tolist())  # grouped by task
    assert batch.anchor.shape[0] == 9 and batch.actions.shape[:2] == (9, 1)
    assert batch.anchor.dtype == torch.uint8 and batch.valid.dtype == torch.bool


def test_device_data_refuses_sequence_objectives(point_data, tmp_path, capsys):
    assert run_pretrain(small(point_data, tmp_path / "cpc", objective="cpc", device_data=True)) == 2
    assert "samples sequences" in capsys.readouterr().err
