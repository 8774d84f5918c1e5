"""PPOStep, the minibatch update the PPO loop runs: checked on CPU for what can be checked there, on CUDA for the rest.

On CPU: PPO updates run through the step equal the plain eager update (``PPOAgent.update`` without a step),
with and without its checks; a device-tensor ratio clip (what a captured step reads) gives the same update
as the number; without checks a minibatch update reads nothing back to the host; a NaN is then caught when
the update's metrics are read. On CUDA (skipped without one): graph replay equals eager to 1e-5 over 20
minibatch updates, and a step re-captured after a checkpoint restore equals the replayed one.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from host_reads import no_host_reads
from test_ppo import OBS_SHAPE, agent_rollout, make_agent, snapshot

from atcrl.fastpath import FastPathConfig
from atcrl.nets.encoders import ConvEncoder
from atcrl.rl.modes import EncoderMode
from atcrl.rl.ppo import ActorCritic, PPOAgent, PPOConfig
from atcrl.rl.rollout import Rollout
from atcrl.train.ppo_step import PPOStep


def _updates(agent: PPOAgent, rollout: Rollout, step, n: int = 3) -> list[dict[str, float]]:
    return [agent.update(rollout, progress=i / 10, generator=torch.Generator().manual_seed(i), step=step)
            for i in range(n)]


@pytest.mark.parametrize("mode", [EncoderMode.end_to_end, EncoderMode.decoupled])
@pytest.mark.parametrize("check", [True, False])
def test_updates_through_the_step_equal_the_eager_update(mode, check):
    agent = make_agent(mode)
    rollout = agent_rollout(agent)
    ref = copy.deepcopy(agent)
    step = PPOStep(agent)
    step.check = check  # False: what it runs under capture
    got, want = _updates(agent, rollout, step), _updates(ref, rollout, None)  # 3 updates x 2 epochs x 2 minibatches
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        for name, value in w.items():
            assert g[name] == pytest.approx(value, rel=1e-6, abs=1e-9), name
    after, expected = snapshot(agent.net), snapshot(ref.net)
    assert all(torch.equal(after[k], expected[k]) for k in expected)
    assert agent.gradient_steps == ref.gradient_steps == 12


def test_a_device_tensor_clip_steps_as_the_number_does():
    agent = make_agent(EncoderMode.end_to_end)
    rollout = agent_rollout(agent)
    ref = copy.deepcopy(agent)
    advantages, returns = rollout.advantages(0.99, 0.95)
    batch = next(rollout.minibatches(advantages, returns, 2, torch.Generator().manual_seed(0)))
    batch["logp"] = batch["logp"] + 0.1 * torch.randn(batch["logp"].shape, generator=torch.Generator().manual_seed(1))
    got = agent.minibatch_update(batch, torch.tensor(0.05), check=False)
    want = ref.minibatch_update(batch, 0.05)
    assert {k: float(v) for k, v in got.items()} == {k: float(v) for k, v in want.items()}
    assert got["rl/clip_fraction"] > 0  # the clip binds somewhere, so a wrong clip would show
    after, expected = snapshot(agent.net), snapshot(ref.net)
    assert all(torch.equal(after[k], expected[k]) for k in expected)


@pytest.mark.parametrize("mode", [EncoderMode.end_to_end, EncoderMode.frozen])
def test_a_minibatch_update_without_checks_reads_nothing_back_to_the_host(mode):
    # With the fast path's Adam (fused: its step counts live on the parameters' device, as on a GPU).
    agent = PPOAgent(make_agent(mode).net, mode, PPOConfig(minibatches=2, epochs=2), fast=FastPathConfig())
    rollout = agent_rollout(agent)
    advantages, returns = rollout.advantages(0.99, 0.95)
    batch = next(rollout.minibatches(advantages, returns, 2, torch.Generator().manual_seed(0)))
    step = PPOStep(agent)
    step.check = False
    with no_host_reads():
        step(batch, 0.1)
    with no_host_reads(), pytest.raises(AssertionError, match="host read"):
        agent.minibatch_update(batch, 0.1)  # the checked update reads its loss: the guard sees it


def test_a_nan_is_caught_when_the_updates_metrics_are_read():
    agent = make_agent(EncoderMode.end_to_end)
    rollout = agent_rollout(agent)
    rollout.rewards[2, 1] = float("nan")
    step = PPOStep(agent)
    step.check = False
    with pytest.raises(FloatingPointError, match="rl/loss.*NaN/inf"):
        agent.update(rollout, step=step)
    checked = make_agent(EncoderMode.end_to_end)  # with checks (the CPU default): before the optimizer step
    with pytest.raises(FloatingPointError, match="PPO loss is nan"):
        checked.update(rollout, step=PPOStep(checked))


# --- CUDA only ------------------------------------------------------------------------------------------------


def _gpu_agent(graph: bool) -> PPOAgent:
    torch.manual_seed(0)
    net = ActorCritic(ConvEncoder("atari", OBS_SHAPE), 3, hidden=32)
    fast = dataclasses.replace(FastPathConfig(), cuda_graph=graph, bf16=False)
    return PPOAgent(net, EncoderMode.end_to_end, PPOConfig(minibatches=2, epochs=2), "cuda", fast=fast)


def _gpu_rollout() -> Rollout:
    """A rollout acted by the CPU twin of ``_gpu_agent`` (the same seed and construction), moved to the GPU."""
    rollout = agent_rollout(make_agent(EncoderMode.end_to_end))
    for name, value in vars(rollout).items():
        if torch.is_tensor(value):
            setattr(rollout, name, value.cuda())
    return rollout


@pytest.mark.cuda
def test_graph_replay_equals_eager_over_20_minibatch_updates(deterministic_cudnn):
    eager, graph = _gpu_agent(False), _gpu_agent(True)
    rollout = _gpu_rollout()
    steps = PPOStep(eager), PPOStep(graph)
    assert steps[1].capture and not steps[0].capture
    metrics = [_updates(agent, rollout, step, n=5) for agent, step in zip((eager, graph), steps)]  # 5 x 4
    assert graph.gradient_steps == 20 and steps[1].runner.graphs
    np.testing.assert_allclose([m["rl/loss"] for m in metrics[1]], [m["rl/loss"] for m in metrics[0]], rtol=1e-5)
    after, expected = snapshot(graph.net), snapshot(eager.net)
    for k in expected:
        torch.testing.assert_close(after[k], expected[k], rtol=1e-5, atol=1e-6)


@pytest.mark.cuda
def test_a_step_recaptured_after_a_restore_equals_the_replayed_one(deterministic_cudnn):
    agent = _gpu_agent(True)
    rollout = _gpu_rollout()
    step = PPOStep(agent)
    _updates(agent, rollout, step, n=2)  # 8 minibatch updates: warm-up, capture, replays
    saved = copy.deepcopy(agent.state_dict())
    _updates(agent, rollout, step, n=3)  # replays of the graph captured above
    replayed = snapshot(agent.net)
    agent.load_state_dict(saved)
    _updates(agent, rollout, PPOStep(agent), n=3)  # a new step after the restore: warm-up, fresh capture
    after = snapshot(agent.net)
    for k in replayed:
        torch.testing.assert_close(after[k], replayed[k], rtol=1e-5, atol=1e-6)


@pytest.mark.cuda
def test_graph_replays_make_no_host_sync():
    agent = _gpu_agent(True)
    rollout = _gpu_rollout()
    advantages, returns = rollout.advantages(0.99, 0.95)
    batches = [b for i in range(3) for b in rollout.minibatches(advantages, returns, 2, torch.Generator().manual_seed(i))]
    step = PPOStep(agent)
    for batch in batches[:6]:  # warm-up and capture
        step(batch, 0.1)
    torch.cuda.set_sync_debug_mode("error")
    try:
        for batch in batches[6:]:  # the copy into the graph's inputs, the clip, the replay
            step(batch, 0.05)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert step.runner.graphs and np.isfinite(list(step.read().values())).all()
