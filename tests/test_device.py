"""One ``--device`` resolver for every loop: auto, explicit devices, and refusals with clear messages."""

from __future__ import annotations

import pytest
import torch

from atcrl.device import resolve_device


def test_auto_and_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


def test_unknown_device_is_refused_by_name():
    with pytest.raises(ValueError, match=r"unknown device 'gpu0'.*auto, cpu, cuda"):
        resolve_device("gpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_a_gpu_is_refused_up_front():
    with pytest.raises(ValueError, match="sees no CUDA GPU"):
        resolve_device("cuda", local_rank=1)


@pytest.mark.cuda
def test_bare_cuda_means_the_local_gpu():
    assert resolve_device("cuda", local_rank=0) == torch.device("cuda", 0)


def test_loops_share_the_one_resolver():
    from atcrl.train import distributed, ppo_loop, probe_cli, sac_loop

    assert sac_loop.resolve_device is resolve_device and distributed.resolve_device is resolve_device
    assert ppo_loop.resolve_device is resolve_device and probe_cli.resolve_device is resolve_device


def test_staging_on_the_cpu_copies_nothing():
    import numpy as np

    from atcrl.device import Staging

    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    staged = Staging(torch.device("cpu"))(array)
    assert staged.data_ptr() == torch.from_numpy(array).data_ptr() and torch.equal(staged, torch.from_numpy(array))


@pytest.mark.cuda
def test_staging_copies_through_one_pinned_buffer_per_shape():
    import numpy as np

    from atcrl.device import Staging

    stage = Staging(torch.device("cuda", 0))
    a, b = np.full((3, 4), 7, np.uint8), np.full((3, 4), 9, np.uint8)
    first = stage(a).clone()
    torch.cuda.synchronize()
    second = stage(b)
    assert first.device.type == "cuda" and torch.equal(first.cpu(), torch.from_numpy(a))
    assert torch.equal(second.cpu(), torch.from_numpy(b)) and len(stage._buffers) == 1
    assert next(iter(stage._buffers.values())).is_pinned()
    on_device = torch.ones(2, device="cuda")
    assert stage(on_device) is on_device  # already there: nothing staged
