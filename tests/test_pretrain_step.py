"""PretrainStep, the offline UL update `atcrl pretrain` runs: checked on CPU where it can be, on CUDA for the rest.

On CPU: the step is the eager composition the loop ran before it (sample -> loss -> check -> backward, clip,
Adam, momentum targets -> schedule) on the same seeds and batches, update by update; its meter's means are
that composition's metrics; without checks nothing inside it reads a value back to the host (device data);
a NaN is caught when the metrics are read; capture refuses what it cannot capture.
On CUDA (skipped without one): graph replay equals eager to 1e-5 over 20 updates, and a step re-captured
after a checkpoint restore equals the replayed one.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from host_reads import no_host_reads
from test_pretrain import record_dataset, small

from atcrl.nets.encoders import ConvEncoder
from atcrl.train import pretrain
from atcrl.train.pretrain import PretrainError, load_data, resolve_settings, run_pretrain, sample, update_rng
from atcrl.train.pretrain_step import PretrainStep, tensor_loss
from atcrl.ul.optim import apply_ul_loss, make_ul_optimizer, objective_grad_clip
from atcrl.ul.registry import make_objective


@pytest.fixture(scope="module")
def point_data(tmp_path_factory):
    return record_dataset(tmp_path_factory.mktemp("data") / "point")


def _parts(point_data, tmp_path, *, device="cpu", device_data=False, objective="atc", **fast):
    """What pretrain's run builds before its loop: data, objective, optimizer and schedule, and the step."""
    cfg = small(point_data, tmp_path / "run", objective=objective, device=device, device_data=device_data)
    cfg = dataclasses.replace(cfg, fast=dataclasses.replace(cfg.fast, **fast))
    settings, data = resolve_settings(cfg), load_data(cfg)
    if device_data:
        data = dataclasses.replace(data, train=data.train.to(device))
    torch.manual_seed(cfg.seed)
    obj = make_objective(objective, ConvEncoder(settings.encoder, data.in_shape), settings.objective).to(device)
    optimizer, scheduler = make_ul_optimizer(obj, settings.optim, fast=cfg.fast)
    need = obj.sampling
    step = PretrainStep(obj, optimizer, scheduler, settings.optim,
                        objective_grad_clip(settings.objective, settings.optim.grad_clip),
                        seed=lambda u: update_rng(cfg.seed, 0, u),
                        draw=lambda rng: sample(data.train, need, need.batch_size, rng).to(device),
                        forward=tensor_loss(obj), fast=cfg.fast, device=torch.device(device))
    return cfg, data, step


def _weights(step: PretrainStep) -> list[torch.Tensor]:
    return [t.detach().clone() for t in step.objective.state_dict().values()]


@pytest.mark.filterwarnings(r"ignore:Seems like `optimizer.step\(\)` has been overridden")  # from the deep copy
@pytest.mark.parametrize("device_data", [False, True])
def test_step_equals_the_eager_update_over_20_updates(point_data, tmp_path, device_data):
    cfg, data, step = _parts(point_data, tmp_path, device_data=device_data)
    ref = copy.deepcopy(step)  # the same weights, optimizer and schedule
    obj, need = ref.objective, ref.objective.sampling
    for update in range(20):
        step(update)
        got = step.read()
        # The update as the loop ran it before the step existed, on the same seeds and batches.
        batch = sample(data.train, need, need.batch_size, update_rng(cfg.seed, 0, update))
        loss, metrics = obj.loss(batch)
        want = {**metrics, **apply_ul_loss(obj, ref.optimizer, ref.scheduler, loss, ref.grad_clip)}
        assert set(got) == set(want)
        for name, value in want.items():
            assert got[name] == pytest.approx(value, rel=1e-5), (update, name)
    for a, b in zip(_weights(step), _weights(ref)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=0)
    assert step.scheduler.last_epoch == ref.scheduler.last_epoch == 20


def test_the_meter_averages_the_interval_and_objectives_without_device_metrics_still_step(point_data, tmp_path):
    _, _, step = _parts(point_data, tmp_path)
    seen = []
    for update in range(3):
        step(update)
        seen.append(step.meter.sums[step.meter.slot["ul/loss"]].item() - sum(seen))
    assert step.read()["ul/loss"] == pytest.approx(np.mean(seen), rel=1e-9)
    _, _, vae = _parts(point_data, tmp_path, objective="vae")  # float metrics: summed on the host
    assert tensor_loss(vae.objective) == vae.objective.loss
    vae(0)
    assert np.isfinite(list(vae.read().values())).all()


def test_the_step_without_checks_reads_nothing_back_to_the_host(point_data, tmp_path):
    _, _, step = _parts(point_data, tmp_path, device_data=True)
    step.check = False  # what it runs under CUDA-graph capture
    step._rng = step.seed(0)
    with no_host_reads():
        step._body()
    batch = step.draw(step.seed(1))
    with no_host_reads(), pytest.raises(AssertionError, match="host read"):
        step.objective.loss(batch)  # the float metrics read back: the guard sees it


def test_a_nan_is_caught_when_the_metrics_are_read(point_data, tmp_path):
    _, _, step = _parts(point_data, tmp_path, device_data=True)
    step.check = False
    with torch.no_grad():
        step.objective.compressor.weight.fill_(float("nan"))
    step(0)
    with pytest.raises(FloatingPointError, match="ul/loss"):
        step.check_finite()
    with pytest.raises(FloatingPointError, match="NaN/inf"):
        step.read()
    _, _, checked = _parts(point_data, tmp_path)  # with checks (the CPU default): before the optimizer step
    with torch.no_grad():
        checked.objective.compressor.weight.fill_(float("nan"))
    before = _weights(checked)
    with pytest.raises(FloatingPointError, match="ATC loss is nan"):
        checked(0)
    for a, b in zip(_weights(checked), before):  # no optimizer step, no momentum update
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


@pytest.fixture
def capturing(monkeypatch):
    """pretrain as under CUDA capture (``captures`` true), on this CPU: its refusals come first."""
    monkeypatch.setattr(pretrain, "captures", lambda cfg, device: True)


@pytest.mark.parametrize("overrides,match", [
    ({"device_data": False}, "needs the training pairs on the device"),
    ({"device_data": True, "objective": "vae"}, "metrics stay on the device"),
])
def test_capture_refuses_what_it_cannot_capture(point_data, tmp_path, capturing, overrides, match):
    with pytest.raises(PretrainError, match=match):
        run_pretrain(small(point_data, tmp_path / "run", **overrides), raise_errors=True)


def test_capture_refuses_a_batch_that_does_not_split_evenly_over_tasks(tmp_path, capturing):
    a = record_dataset(tmp_path / "a", episodes=3, task="a")
    b = record_dataset(tmp_path / "b", episodes=3, task="b", seed=1)
    with pytest.raises(PretrainError, match="splits evenly over the 2 tasks"):
        run_pretrain(small((a, b), tmp_path / "run", device_data=True, batch_size=15), raise_errors=True)


# --- CUDA only ------------------------------------------------------------------------------------------------


def _gpu(point_data, tmp_path, graph: bool) -> PretrainStep:
    return _parts(point_data, tmp_path, device="cuda", device_data=True, cuda_graph=graph, bf16=False)[2]


@pytest.mark.cuda
def test_graph_replay_equals_eager_over_20_updates(point_data, tmp_path, deterministic_cudnn):
    eager, graph = _gpu(point_data, tmp_path, False), _gpu(point_data, tmp_path, True)
    assert graph.capture and not eager.capture
    losses = {}
    for step in (eager, graph):
        losses[id(step)] = []
        for update in range(20):
            step(update)
            losses[id(step)].append(step.read()["ul/loss"])
    assert len(graph.runner.graphs) == 1
    np.testing.assert_allclose(losses[id(graph)], losses[id(eager)], rtol=1e-5)
    for a, b in zip(_weights(graph), _weights(eager)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.cuda
def test_a_step_recaptured_after_a_restore_equals_the_replayed_one(point_data, tmp_path, deterministic_cudnn):
    step = _gpu(point_data, tmp_path, True)
    for update in range(8):
        step(update)
    saved = copy.deepcopy({"objective": step.objective.state_dict(), "optimizer": step.optimizer.state_dict(),
                           "scheduler": step.scheduler.state_dict()})
    for update in range(8, 14):
        step(update)  # replays the graph captured above
    replayed = _weights(step)
    step.objective.load_state_dict(saved["objective"])
    step.optimizer.load_state_dict(saved["optimizer"])
    step.scheduler.load_state_dict(saved["scheduler"])
    # The restore replaced the optimizer states the graph points at: a new step, as `atcrl pretrain` makes.
    step = PretrainStep(step.objective, step.optimizer, step.scheduler, step.optim, step.grad_clip, seed=step.seed,
                        draw=step.draw, forward=step.forward, fast=step.fast, device=step.device)
    for update in range(8, 14):
        step(update)  # eager warm-up, then a fresh capture
    assert step.runner.graphs
    for a, b in zip(_weights(step), replayed):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.cuda
def test_graph_replays_make_no_host_sync(point_data, tmp_path):
    step = _gpu(point_data, tmp_path, True)
    for update in range(6):  # warm-up and capture
        step(update)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for update in range(6, 10):  # seeding, replay, the schedule's in-place rate
            step(update)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert np.isfinite(list(step.read().values())).all()
