"""PPO-LSTM: gradient isolation per mode, episode-start resets, the update recomputing the acting policy,
non-square DMLab frames, prioritised UL anchors, learning a memory task, and the CLI (kill -9 / resume,
evaluate, collect)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from reltools import kill_9_after_checkpoint

from atcrl.checkpoint import load_checkpoint
from atcrl.cli import main as atcrl
from atcrl.data.replay import Replay
from atcrl.encoder_io import load_encoder
from atcrl.fastpath import FastPathConfig
from atcrl.nets.encoders import ConvEncoder
from atcrl.rl.modes import EncoderMode
from atcrl.rl.ppo import PPOConfig
from atcrl.rl.ppo_lstm import PPOLSTMAgent, PPOLSTMConfig, RecurrentActorCritic, RecurrentRollout
from atcrl.train import ppo_loop
from atcrl.train.ppo_lstm_loop import PPOLSTMLoopConfig, build_run, collect, train

FP32 = FastPathConfig.fp32_eager()
SMALL = PPOLSTMConfig(hidden=16, lstm=16)


def agent_on(shape: tuple[int, int, int], mode: EncoderMode, n_actions: int = 3) -> PPOLSTMAgent:
    torch.manual_seed(0)
    net = RecurrentActorCritic(ConvEncoder("dmlab", shape), n_actions, SMALL.hidden, SMALL.lstm)
    return PPOLSTMAgent(net, mode, SMALL)


def random_rollout(agent: PPOLSTMAgent, T: int, N: int) -> RecurrentRollout:
    """A rollout of random data; its inputs are ``obs`` (end-to-end) or conv features of ``obs`` still attached
    to the conv's graph (decoupled / frozen), so only the agent's own detach can keep RL off the conv."""
    g = torch.Generator().manual_seed(1)
    shape, dtype = agent.policy_input_spec()
    r = RecurrentRollout.empty(T, N, shape, dtype, SMALL.lstm, "cpu")
    obs = torch.randint(0, 256, (T, N, *agent.net.encoder.in_shape), generator=g, dtype=torch.uint8)
    r.steps.inputs = obs if not agent.caches_features else agent.net.features(obs.flatten(0, 1)).view(T, N, -1)
    r.steps.actions = torch.randint(agent.net.n_actions, (T, N), generator=g)
    r.steps.logp = torch.full((T, N), -1.0)
    r.steps.rewards = torch.randn(T, N, generator=g)
    r.prev_actions = torch.randint(agent.net.n_actions, (T, N), generator=g)
    r.prev_rewards = torch.randn(T, N, generator=g)
    r.starts[T // 2] = True
    r.h0, r.c0 = torch.randn(N, SMALL.lstm, generator=g), torch.randn(N, SMALL.lstm, generator=g)
    return r


@pytest.mark.parametrize("mode", list(EncoderMode))
def test_only_end_to_end_lets_the_rl_loss_reach_the_conv(mode):
    agent = agent_on((3, 24, 32), mode)
    conv = agent.net.encoder
    owned = {id(p) for p in agent.rl_parameters()}
    assert all(id(p) in owned for p in agent.net.lstm.parameters())
    assert all((id(p) in owned) == (mode is EncoderMode.end_to_end) for p in conv.parameters())
    rollout = random_rollout(agent, 6, 4)
    logits, values = agent.evaluate(rollout, torch.arange(4))
    (logits.logsumexp(-1).sum() + values.sum()).backward()
    grads = [p.grad for p in conv.parameters()]
    if mode is EncoderMode.end_to_end:
        assert all(g is not None and g.abs().sum() > 0 for g in grads)
    else:  # a leak through the detach would leave gradients here
        assert all(g is None for g in grads)
    assert all(p.grad is not None for p in agent.net.fc.parameters())
    before = [p.detach().clone() for p in conv.parameters()]
    agent.zero_grad()
    agent.update(random_rollout(agent, 6, 4))
    changed = any(not torch.equal(a, p) for a, p in zip(before, conv.parameters()))
    assert changed == (mode is EncoderMode.end_to_end)


def test_an_episode_start_mid_sequence_zeroes_the_state_and_the_previous_action_and_reward():
    net = agent_on((3, 24, 24), EncoderMode.end_to_end).net
    g = torch.Generator().manual_seed(2)
    T, N, k = 8, 3, 4
    feats = torch.randn(T, N, net.encoder.feature_dim, generator=g)
    prev_a = torch.randint(3, (T, N), generator=g)
    prev_r = torch.randn(T, N, generator=g)
    state = (torch.randn(N, 16, generator=g), torch.randn(N, 16, generator=g))
    starts = torch.zeros(T, N, dtype=torch.bool)
    starts[k] = True
    with torch.no_grad():
        logits, values, _ = net.core(feats, prev_a, prev_r, starts, state)
        # From step k as a new sequence begun from the zero state.
        fresh, fresh_v, _ = net.core(feats[k:], prev_a[k:], prev_r[k:], starts[k:], net.initial_state(N, "cpu"))
        # The previous action and reward at the start read as zero: any other ones give the same outputs.
        other, _, _ = net.core(feats[k:], (prev_a[k:] + 1) % 3, prev_r[k:] + 5, starts[k:], net.initial_state(N, "cpu"))
        carried, _, _ = net.core(feats, prev_a, prev_r, torch.zeros_like(starts), state)
    assert torch.allclose(logits[k:], fresh, atol=1e-6) and torch.allclose(values[k:], fresh_v, atol=1e-6)
    assert torch.allclose(other[0], fresh[0], atol=1e-6)
    assert not torch.allclose(carried[k:], fresh, atol=1e-4)  # without the reset the memory would carry on


def small_loop(**kw) -> PPOLSTMLoopConfig:
    base = {"env": "tiny:cue", "image_size": 24, "num_envs": 4, "horizon": 10, "steps": 80, "ul": "none",
            "mode": EncoderMode.end_to_end, "device": "cpu", "fast": FP32, "ppo": SMALL}
    return PPOLSTMLoopConfig(**{**base, **kw})


def test_the_update_recomputes_exactly_the_policy_that_acted_across_episode_ends_and_rollouts():
    # 4-step episodes in 10-step rollouts: ends fall mid-sequence and states carry into the next rollout.
    run = build_run(small_loop())
    shape, dtype = run.agent.policy_input_spec()
    rollout = RecurrentRollout.empty(10, 4, shape, dtype, 16, "cpu")
    for _ in range(2):
        collect(run, rollout)
    assert rollout.starts.any() and not rollout.starts.all() and rollout.h0.abs().sum() > 0
    with torch.no_grad():
        logits, values = run.agent.evaluate(rollout, torch.arange(4))
    logp = torch.log_softmax(logits, -1).gather(-1, rollout.steps.actions[..., None])[..., 0]
    assert torch.allclose(logp, rollout.steps.logp, atol=1e-5)
    assert torch.allclose(values, rollout.steps.values, atol=1e-5)


def test_the_dmlab_conv_reads_non_square_72x96_frames():
    agent = agent_on((3, 72, 96), EncoderMode.end_to_end, n_actions=9)
    assert agent.net.encoder.feature_shape == (64, 7, 10)
    N = 2
    out = agent.act(torch.zeros(N, 3, 72, 96, dtype=torch.uint8), torch.zeros(N, dtype=torch.int64), torch.zeros(N),
                    torch.ones(N, dtype=torch.bool), agent.initial_state(N))
    assert out.action.shape == (N,) and out.state[0].shape == (N, 16)
    assert np.isfinite(agent.update(random_rollout(agent, 3, 2))["rl/loss"])


def test_priorities_change_which_anchors_ul_draws():
    replay = Replay(200, (1, 4, 4), frame_stack=1, action_dtype=np.int64)
    replay.add_first(np.zeros((1, 4, 4), np.uint8))
    for t in range(99):
        replay.add_step(0, 0.0, np.full((1, 4, 4), t + 1, np.uint8), False, False)
    rng = np.random.default_rng(0)
    weights = np.ones(200)
    weights[:10] = 50.0  # the first ten frames (values 0..9)

    def share_of_first_ten(**kw) -> float:
        anchors = [replay.sample_pairs(4, rng, delta_t=1, **kw).anchor.numpy()[:, 0, 0, 0] for _ in range(200)]
        return float(np.mean(np.concatenate(anchors) < 10))

    assert share_of_first_ten() < 0.2  # uniform: about 10%
    assert share_of_first_ten(priorities=weights) > 0.6  # 50x weight: about 85% of first draws


def test_a_prioritised_ul_run_scores_its_steps_by_advantage():
    atc = dataclasses.replace(PPOLSTMLoopConfig().atc, batch_size=16, sequence_length=4)
    run = build_run(small_loop(ul="atc", mode=EncoderMode.decoupled, ul_start_steps=0, rl_start_steps=40,
                               ul_replay_size=400, atc=atc, ul_prioritized=True))
    train(run)
    values = run.priorities.values[0][: len(run.ul.replays[0])]
    assert run.ul.priorities is run.priorities.values
    assert len(np.unique(values)) > 5  # scored by |advantage|, not all equal
    with pytest.raises(ValueError, match="ul_prioritized"):
        small_loop(ul_prioritized=True)


def test_the_recurrent_agent_solves_the_memory_task_and_the_feed_forward_one_stays_at_chance():
    torch.set_num_threads(1)
    common = {"env": "tiny:cue", "image_size": 24, "encoder": "dmlab", "frame_stack": 1, "num_envs": 8,
              "horizon": 16, "steps": 8_000, "ul": "none", "mode": EncoderMode.end_to_end, "device": "cpu",
              "fast": FP32, "seed": 0}
    lstm = build_run(PPOLSTMLoopConfig(**common, ppo=PPOLSTMConfig(hidden=32, lstm=32, lr=2e-3, epochs=4,
                                                                   anneal=False)))
    recurrent = [m["rl/episode_return"] for _, m in train(lstm)[-20:]]
    ff = ppo_loop.build_run(ppo_loop.PPOLoopConfig(**common, ppo=PPOConfig(hidden=32, lr=2e-3, epochs=4, minibatches=2,
                                                                          anneal=False)))
    feed_forward = [m["rl/episode_return"] for _, m in ppo_loop.train(ff)[-20:]]
    assert np.mean(recurrent) > 0.9, recurrent  # success rate over the last 20 iterations (640 episodes)
    assert abs(np.mean(feed_forward) - 0.5) < 0.1, feed_forward


CLI = ["--preset", "dmlab-ppo-rl-atc", "--env", "tiny:cue", "--ppo-lstm.image-size", "24", "--ppo-lstm.num-envs", "4",
       "--ppo-lstm.horizon", "16", "--ppo-lstm.agent.hidden", "16", "--ppo-lstm.agent.lstm", "16",
       "--ppo-lstm.ul-start-steps", "0", "--ppo-lstm.rl-start-steps", "64", "--ppo-lstm.ul-replay-size", "400",
       "--ppo-lstm.atc.batch-size", "16", "--eval-episodes", "0", "--no-tensorboard"]


def test_kill_9_then_resume_reaches_the_uninterrupted_runs_step_and_counters_and_evaluate_collect_act(tmp_path, capsys):
    args = [*CLI, "--steps", "1280", "--ckpt-every", "64"]
    killed = tmp_path / "killed"
    last = kill_9_after_checkpoint(["train", *args], killed, 192)
    assert 192 <= last < 1280
    assert atcrl(["train", "--resume", str(killed)]) == 0
    assert f"resuming {killed} at step {last}" in capsys.readouterr().err
    straight = tmp_path / "straight"
    assert atcrl(["train", *args, "--out", str(straight)]) == 0
    resumed = load_checkpoint(killed / "checkpoints", kind="train").state
    reference = load_checkpoint(straight / "checkpoints", kind="train").state
    assert resumed["step"] == reference["step"] == 1280
    for key in ("iterations", "gradient_steps"):
        assert resumed["run"]["agent"][key] == reference["run"]["agent"][key] > 0
    assert resumed["run"]["ul"]["updates"] == reference["run"]["ul"]["updates"]
    assert resumed["run"]["agent"]["modules"].keys() == reference["run"]["agent"]["modules"].keys()

    capsys.readouterr()
    assert atcrl(["evaluate", "--run", str(straight), "--episodes", "4"]) == 0
    assert "4 deterministic episodes" in capsys.readouterr().out
    assert atcrl(["collect", "--checkpoint", str(straight), "--episodes", "3", "--out", str(tmp_path / "d"),
                  "--explore"]) == 0
    assert len(list((tmp_path / "d").rglob("*.npz"))) == 3

    # The run's conv, exported, is the frozen preset's encoder, and frozen RL leaves it as it was.
    enc = tmp_path / "enc.safetensors"
    assert atcrl(["export", "--run", str(straight), "--out", str(enc)]) == 0
    frozen = tmp_path / "frozen"
    assert atcrl(["train", "--preset", "dmlab-ppo-frozen", "--encoder", str(enc), *CLI[2:], "--steps", "256",
                  "--out", str(frozen)]) == 0
    after = load_checkpoint(frozen / "checkpoints", kind="train").state["run"]["agent"]["modules"]
    conv = {k[len("net.encoder."):]: v for k, v in after.items() if k.startswith("net.encoder.")}
    exported = load_encoder(enc).state_dict()
    assert conv and conv.keys() == exported.keys() and all(torch.equal(conv[k], exported[k]) for k in conv)
    assert after["net.fc.weight"].shape == reference["run"]["agent"]["modules"]["net.fc.weight"].shape


def test_the_actor_carries_its_state_through_an_episode_and_reset_starts_afresh():
    from atcrl.train.algorithms import RecurrentActor, after_step, start_episode

    agent = agent_on((3, 24, 24), EncoderMode.end_to_end)
    g = torch.Generator().manual_seed(3)
    frames = torch.randint(0, 256, (5, 1, 3, 24, 24), generator=g, dtype=torch.uint8)
    act = RecurrentActor(agent, explore=False, generator=None)
    actions = []
    for t, obs in enumerate(frames):
        actions.append(act(obs[0].numpy()))
        after_step(act, float(t))
    # The same five steps as one sequence through the network: the actor's state is its final state.
    prev = torch.tensor([[0], *[[a] for a in actions[:-1]]])
    starts = torch.zeros(5, 1, dtype=torch.bool)
    starts[0] = True
    with torch.no_grad():
        feats = agent.net.features(frames.flatten(0, 1)).view(5, 1, -1)
        logits, _, (h, _) = agent.net.core(feats, prev, torch.arange(-1.0, 4.0)[:, None], starts,
                                           agent.initial_state(1))
    assert actions == logits.argmax(-1)[:, 0].tolist() and torch.allclose(act.state[0], h, atol=1e-6)
    start_episode(act)
    assert act.state[0].abs().sum() == 0 and bool(act.starts[0])


def test_a_3d_smoke_run_on_miniworld():
    pytest.importorskip("miniworld")
    cfg = PPOLSTMLoopConfig(env="gym:MiniWorld-FourRooms-v0", image_size=48, num_envs=2, horizon=8, steps=32,
                            mode=EncoderMode.end_to_end, ul="none", device="cpu", fast=FP32, ppo=SMALL)
    run = build_run(cfg)
    try:
        history = train(run)
    finally:
        run.env.close()
    assert run.agent.iterations == 2 and np.isfinite(history[-1][1]["rl/loss"])
