"""SACStep: the update the online SAC loop runs, checked on CPU for what can be checked there, on CUDA for the rest.

On CPU: the step (device replay on the CPU, or the host replay) is exactly the eager composition of
sample -> shift -> SAC update -> ATC on the same batch -> UL step; its meter's means are the metrics that
composition reports; nothing inside it reads a value back to the host when it runs without checks; a NaN
is caught when metrics are read; and a run with the replay on the device trains and learns.
On CUDA (skipped without one): graph replay equals eager to 1e-5 over 20 updates, a step re-captured after
a checkpoint restore equals the replayed one, and replays make no host sync.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from host_reads import no_host_reads
from test_sac import POINT, SMALL, frozen_latent_agent, random_policy_return

from atcrl.data.device_replay import DeviceReplay
from atcrl.nets.encoders import ConvEncoder
from atcrl.rl.modes import EncoderMode
from atcrl.rl.sac import SACConfig
from atcrl.train import sac_step
from atcrl.train.sac_loop import build_run, train
from atcrl.train.sac_step import SACStep
from atcrl.ul.optim import apply_ul_loss

DECOUPLED = dataclasses.replace(POINT, mode=EncoderMode.decoupled, warmup_steps=60, steps=60, device_replay=True)


def _filled(cfg=DECOUPLED):
    """A run whose replay holds its warm-up (60 random-policy steps, more than one episode)."""
    run = build_run(cfg)
    train(run)
    assert run.agent.updates == 0 and run.replay.num_transitions >= cfg.batch_size
    return run


def _weights(run) -> list[torch.Tensor]:
    return [t.detach().clone() for t in (*run.agent.state_dict()["modules"].values(),
                                         *run.objective.state_dict().values())]


@pytest.mark.filterwarnings(r"ignore:Seems like `optimizer.step\(\)` has been overridden")
def test_step_equals_the_eager_composition_and_its_meter_averages_its_metrics():
    run = _filled()
    ref = copy.deepcopy(run)
    assert isinstance(run.replay, DeviceReplay) and run.reuses_rl_batch
    reported = []
    torch.manual_seed(5)
    for _ in range(10):
        run.step_fn()
    means = run.step_fn.read()
    torch.manual_seed(5)
    for _ in range(10):  # the composition sac_loop ran before the step existed, on the same draws
        batch = ref.agent.prepare(ref.replay.sample_transitions(ref.cfg.batch_size, n_step=1, gamma=ref.cfg.discount))
        metrics, features = ref.agent.update(batch, keep_graph=True)
        loss, ul = ref.objective.loss_from_features(features, batch.next_obs)
        reported.append({**metrics, **ul, **apply_ul_loss(ref.objective, ref.ul.optimizer, ref.ul.scheduler, loss,
                                                          ref.ul.grad_clip)})
    assert all(torch.equal(a, b) for a, b in zip(_weights(run), _weights(ref)))
    assert run.agent.updates == ref.agent.updates == 10 and run.ul.updates == 10
    assert run.ul.scheduler.last_epoch == ref.ul.scheduler.last_epoch
    names = {k for m in reported for k in m}
    assert set(means) == names
    for name in names:
        values = [m[name] for m in reported if name in m]
        assert means[name] == pytest.approx(np.mean(values), rel=1e-6), name
    assert len([m for m in reported if "rl/actor_loss" in m]) == 5  # the actor steps every second update


@pytest.mark.parametrize("device_replay", [True, False])
def test_the_step_without_checks_reads_nothing_back_to_the_host(device_replay):
    run = _filled(dataclasses.replace(DECOUPLED, device_replay=device_replay))
    step = run.step_fn
    step.check = False  # what it runs under CUDA-graph capture
    for update in range(4):  # both phases of the actor / target cadence
        actor, targets = run.agent.schedule(update)
        if device_replay:
            with no_host_reads():
                step._body(actor, targets)
        else:  # the host replay gathers on the CPU first (no capture with it); the update after that syncs nothing
            batch = run.agent.prepare(step._sample())
            with no_host_reads():
                run.agent.update_tensors(batch, actor=actor, targets=targets, keep_graph=True, check=False)
    with no_host_reads(), pytest.raises(AssertionError, match="host read"):
        run.agent.update(run.agent.prepare(step._sample()))  # the eager update reads its metrics: the guard sees it


def test_a_nan_is_caught_when_the_metrics_are_read():
    run = _filled()
    step = run.step_fn
    step.check = False
    with torch.no_grad():
        run.agent.critic.q1[0].weight.fill_(float("nan"))
    step()
    with pytest.raises(FloatingPointError, match="rl/critic_loss"):
        step.check_finite()
    with pytest.raises(FloatingPointError, match="NaN/inf"):
        step.read()
    checked = _filled().step_fn  # with checks (the CPU default) it stops before the optimizer step
    with torch.no_grad():
        checked.run.agent.critic.q1[0].weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="critic loss"):
        checked()


@pytest.fixture
def capturing(monkeypatch):
    """SACStep made as under CUDA capture (``captures`` true), on this CPU: its refusals come first."""
    monkeypatch.setattr(sac_step, "captures", lambda cfg, device: True)
    return SACStep


def test_capture_refuses_the_host_replay(capturing):
    run = _filled(dataclasses.replace(DECOUPLED, device_replay=False))
    with pytest.raises(ValueError, match="device_replay"):
        capturing(run)


def test_capture_refuses_a_ul_batch_of_its_own(capturing):
    run = _filled(dataclasses.replace(DECOUPLED, ul_batch_size=16))
    assert not run.reuses_rl_batch
    with pytest.raises(ValueError, match="samples its own"):
        capturing(run)


def test_a_run_with_its_replay_on_the_device_learns_tiny_point():
    cfg = dataclasses.replace(POINT, mode=EncoderMode.end_to_end, image_size=40, steps=600, warmup_steps=100,
                              eval_episodes=10, log_every=600, sac=SACConfig(hidden=(64, 64)), device_replay=True)
    run = build_run(cfg)
    assert isinstance(run.replay, DeviceReplay)
    history = train(run)
    learned = history[-1][1]["eval/return_mean"]
    assert learned > random_policy_return(20, seed=1) + 15, learned


# --- CUDA only ------------------------------------------------------------------------------------------------

GPU = dataclasses.replace(DECOUPLED, device="cuda", sac=SMALL)


def _gpu_run(graph: bool):
    cfg = dataclasses.replace(GPU, fast=dataclasses.replace(GPU.fast, cuda_graph=graph, bf16=False))
    torch.manual_seed(0)
    return _filled(cfg)


@pytest.mark.cuda
def test_graph_replay_equals_eager_over_20_updates(deterministic_cudnn):
    eager, graph = _gpu_run(False), _gpu_run(True)
    graph.load_state_dict(eager.state_dict())  # the same weights, and the same replay contents by construction
    graph.replay.load_state_dict(eager.replay.state_dict())
    assert graph.step_fn.capture and not eager.step_fn.capture
    losses = {}
    for run in (eager, graph):
        torch.cuda.manual_seed(7)
        run_losses = []
        for _ in range(20):
            run.step_fn()
            run_losses.append(run.step_fn.read()["rl/critic_loss"])
        losses[id(run)] = run_losses
    assert len(graph.step_fn.graphs) == 2  # one per phase of the actor/target cadence
    np.testing.assert_allclose(losses[id(graph)], losses[id(eager)], rtol=1e-5)
    for a, b in zip(_weights(graph), _weights(eager)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.cuda
def test_a_step_recaptured_after_a_restore_equals_the_replayed_one(deterministic_cudnn):
    run = _gpu_run(True)
    for _ in range(8):
        run.step_fn()
    saved = copy.deepcopy(run.state_dict())
    replay_state = run.replay.state_dict()
    torch.cuda.manual_seed(3)
    for _ in range(6):
        run.step_fn()  # replays the graphs captured above
    replayed = _weights(run)
    run.load_state_dict(saved)
    run.replay.load_state_dict(replay_state)
    assert run._step is None  # dropped: the restore replaced the optimizer states its graphs point at
    torch.cuda.manual_seed(3)
    for _ in range(6):
        run.step_fn()  # eager warm-up, then a fresh capture
    for a, b in zip(_weights(run), replayed):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.cuda
def test_graph_replays_make_no_host_sync():
    run = _gpu_run(True)
    for _ in range(8):  # warm-up and capture of both phases
        run.step_fn()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(4):
            run.step_fn()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert np.isfinite(list(run.step_fn.read().values())).all()


# --- which UL batch online SAC trains on ----------------------------------------------------------------------


def test_atc_reuses_the_critic_batch_only_where_it_is_its_own_batch():
    assert _filled().reuses_rl_batch  # the reference setting: Δt 1, batch = SAC batch, the same shift
    other_shift = _filled(dataclasses.replace(DECOUPLED, ul_args=("shift_prob=0.5",)))
    assert other_shift.objective.cfg.shift_prob == 0.5 and not other_shift.reuses_rl_batch
    no_shift = _filled(dataclasses.replace(DECOUPLED, ul_args=("augment=false",)))
    assert not no_shift.reuses_rl_batch
    other_step = _filled(dataclasses.replace(DECOUPLED, ul_args=("delta_t=2",)))
    assert not other_step.reuses_rl_batch
    other_step.step_fn()  # samples its own pairs from the replay instead
    assert other_step.ul.updates == 1
    with pytest.raises(ValueError, match="has no setting 'shift_probability'"):
        build_run(dataclasses.replace(DECOUPLED, ul_args=("shift_probability=0.5",)))


def test_online_ul_clips_with_the_objectives_own_clip_as_offline():
    from atcrl.train.online_ul import OnlineUL, build_objective
    from atcrl.ul.optim import ULOptimConfig, objective_grad_clip
    from atcrl.ul.registry import atc_family, default_config

    run = _filled()
    cpc = build_objective("cpc", run.agent.encoder, device="cpu", action_dim=2)
    online = OnlineUL(cpc, [run.replay], ULOptimConfig(grad_clip=10.0, warmup_updates=0), None, "cpu")
    assert online.grad_clip == default_config("cpc").grad_clip == 1000.0
    assert objective_grad_clip(default_config("cpc"), 10.0) == 1000.0  # what pretraining clips CPC at
    assert run.ul.grad_clip == run.cfg.ul_grad_clip == 10.0  # ATC has no clip of its own
    assert [atc_family(n) for n in ("atc", "ac", "ats", "cpc", "vae")] == [True, True, True, False, False]


def test_a_sequence_objective_is_refused_with_the_replay_on_the_device():
    with pytest.raises(ValueError, match="needs sequences: set device_replay False"):
        build_run(dataclasses.replace(DECOUPLED, ul="cpc"))


# --- the frozen agent's uint8 latents -------------------------------------------------------------------------


def test_uint8_latents_read_nothing_back_and_fix_their_scale_at_the_first_nonzero_features():
    agent = frozen_latent_agent("uint8")
    g = torch.Generator().manual_seed(0)
    dim = torch.randint(0, 64, (4, *agent.encoder.in_shape), dtype=torch.uint8, generator=g)
    with no_host_reads():  # what the loop runs once per agent step: no device sync on a GPU
        dark = agent.latent(torch.zeros_like(dim))  # features all zero: nothing to fix the scale from yet
        unset = agent.latent_scale.clone()
        first = agent.latent(dim)
        fixed = agent.latent_scale.clone()
        again = agent.latent(dim * 2)
    assert dark.dtype == torch.uint8 and not dark.any() and unset == 0
    features = agent.encoder(dim)
    assert fixed == pytest.approx(2 * float(features.max()) / 255) and agent.latent_scale == fixed  # fixed once
    assert torch.equal(first, (features / fixed).round().clamp(0, 255).to(torch.uint8))
    assert torch.equal(again, (agent.encoder(dim * 2) / fixed).round().clamp(0, 255).to(torch.uint8))


def test_a_frozen_uint8_latent_run_with_the_device_replay_reads_nothing_back_per_observation():
    from atcrl.train.sac_loop import _policy_input

    cfg = dataclasses.replace(POINT, mode=EncoderMode.frozen, latent_replay=True, latent_dtype="uint8",
                              device_replay=True, warmup_steps=0, steps=0)
    torch.manual_seed(0)
    run = build_run(cfg, encoder=ConvEncoder("dmc", (3, 32, 32)))
    obs, _ = run.env.reset(seed=0)
    with no_host_reads():  # the copy in and the conv's latent: what one agent step costs before its action
        policy_input, stored = _policy_input(run, obs)
    assert stored.dtype == torch.uint8 and policy_input is stored and run.agent.latent_scale > 0
    run.close()
