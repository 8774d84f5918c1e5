"""Double DQN (atcrl.rl.dqn, atcrl.train.dqn_loop): gradient isolation per encoder mode, the TD target, target
updates, ε-greedy acting and the per-env ε spread, reward clipping in n-step sums, save/load, and learning
tiny:catch from pixels."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from atcrl.data.batches import TransitionBatch
from atcrl.data.replay import Replay
from atcrl.envs import make_env
from atcrl.fastpath import FastPathConfig
from atcrl.nets.encoders import ConvEncoder
from atcrl.presets import RL_PRESETS
from atcrl.rl.dqn import DQNAgent, DQNConfig, QNetwork
from atcrl.rl.modes import EncoderMode
from atcrl.train.dqn_loop import DQNLoopConfig, train_dqn
from atcrl.ul.atc import ATC_PRESETS

OBS = (4, 32, 32)


def agent_of(mode: str, **cfg) -> DQNAgent:
    torch.manual_seed(0)
    return DQNAgent(QNetwork(ConvEncoder("dmc", OBS), 3, hidden=16, dueling=cfg.pop("dueling", False)), mode,
                    DQNConfig(**cfg))


def batch(n: int = 8, seed: int = 0) -> TransitionBatch:
    g = torch.Generator().manual_seed(seed)
    return TransitionBatch(obs=torch.randint(0, 256, (n, *OBS), generator=g, dtype=torch.uint8),
                           action=torch.randint(0, 3, (n,), generator=g), reward=torch.randn(n, generator=g),
                           discount=torch.full((n,), 0.99), next_obs=torch.randint(0, 256, (n, *OBS), generator=g,
                                                                                   dtype=torch.uint8),
                           task=torch.zeros(n, dtype=torch.int64))


@pytest.mark.parametrize("dueling", [False, True])
@pytest.mark.parametrize("mode", ["end_to_end", "decoupled", "frozen"])
def test_only_end_to_end_lets_the_td_loss_reach_the_conv(mode, dueling):
    agent = agent_of(mode, dueling=dueling)
    conv = list(agent.net.encoder.parameters())
    loss, metrics = agent.loss(batch())
    assert loss.requires_grad and {"rl/loss", "rl/q", "rl/q_target"} <= metrics.keys()
    loss.backward()
    reached = [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in conv]
    assert all(reached) if mode == "end_to_end" else not any(reached)
    owned = {id(p) for p in agent.rl_parameters()}
    assert all((id(p) in owned) == (mode == "end_to_end") for p in conv)
    assert all(p.grad is not None for p in agent.net.head.parameters())  # the head always learns
    before = [p.detach().clone() for p in conv]
    agent.optimizer.zero_grad()
    agent.update(batch(seed=1))
    changed = [not torch.equal(b, p) for b, p in zip(before, conv)]
    assert all(changed) if mode == "end_to_end" else not any(changed)
    assert all(p.grad is None for p in agent.target.parameters())  # the target never learns


@pytest.mark.parametrize("double", [True, False])
def test_the_td_target_is_reward_plus_discounted_target_q_at_the_chosen_action(double):
    agent = agent_of("end_to_end", double=double)
    torch.manual_seed(3)
    with torch.no_grad():  # move the online head away from the target, so the two networks choose differently
        for p in agent.net.head.parameters():
            p.add_(torch.randn_like(p))
    b = batch(32, seed=4)
    b.discount[0] = 0.0  # a true terminal: no bootstrap
    with torch.no_grad():
        online_next = agent.net.q_values(b.next_obs, agent.mode)
        target_next = agent.target.q_values(b.next_obs, agent.mode)
        pick = (online_next if double else target_next).argmax(1)
        y = b.reward + b.discount * target_next.gather(1, pick[:, None]).squeeze(1)
        q = agent.net.q_values(b.obs, agent.mode).gather(1, b.action[:, None]).squeeze(1)
    loss, metrics = agent.loss(b)
    assert torch.allclose(loss, F.huber_loss(q, y, delta=1.0)) and metrics["rl/q_target"] == pytest.approx(float(y.mean()))
    assert not torch.equal(online_next.argmax(1), target_next.argmax(1))  # so the check above tells them apart


def test_the_target_copies_the_online_net_exactly_every_period_or_follows_it_by_ema():
    agent = agent_of("end_to_end", target_update_every=3)
    start = {k: v.clone() for k, v in agent.target.state_dict().items()}
    for i in range(3):
        agent.update(batch(seed=i))
        same = all(torch.equal(start[k], v) for k, v in agent.target.state_dict().items())
        assert same == (i < 2)
    assert all(torch.equal(v, agent.net.state_dict()[k]) for k, v in agent.target.state_dict().items())

    ema = agent_of("end_to_end", target_update_every=1, target_tau=0.5)
    old = [p.clone() for p in ema.target.parameters()]
    ema.update(batch())
    for o, t, n in zip(old, ema.target.parameters(), ema.net.parameters()):
        assert torch.allclose(t, 0.5 * o + 0.5 * n)


def test_epsilon_greedy_acts_at_random_with_probability_epsilon_and_greedily_otherwise():
    agent = agent_of("end_to_end")
    obs = batch(512).obs
    greedy = agent.greedy(obs)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(agent.act(obs, 0.0, g), greedy)
    random = agent.act(obs, 1.0, g)
    assert set(random.tolist()) == {0, 1, 2} and (random != greedy).float().mean() > 0.5
    eps = torch.tensor([0.0, 1.0]).repeat(256)  # per observation
    mixed = agent.act(obs, eps, g)
    assert torch.equal(mixed[::2], greedy[::2]) and (mixed[1::2] != greedy[1::2]).any()
    a, b = agent.act(obs, 0.3, torch.Generator().manual_seed(5)), agent.act(obs, 0.3, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_each_env_ends_at_its_own_log_spaced_epsilon_between_eps_max_and_eps_min():
    cfg = DQNLoopConfig(env="tiny:catch", num_envs=8, warmup_steps=100, eps_decay_steps=1000)
    final = cfg.final_epsilons()
    assert final[0] == pytest.approx(0.2) and final[-1] == pytest.approx(0.001)
    ratios = final[1:] / final[:-1]
    assert np.allclose(ratios, ratios[0]) and ratios[0] < 1  # geometric: log-spaced
    assert np.all(cfg.epsilons(99) == 1.0)  # warm-up: uniformly random
    assert np.allclose(cfg.epsilons(100), 1.0) and np.allclose(cfg.epsilons(600), (1.0 + final) / 2)
    assert np.allclose(cfg.epsilons(1100), final) and np.allclose(cfg.epsilons(10**6), final)
    assert DQNLoopConfig(env="tiny:catch", num_envs=1).final_epsilons().tolist() == [0.2]
    assert cfg.updates_due(99) == 0 and cfg.updates_due(108) == 2  # one update per train_every=4 steps
    with pytest.raises(ValueError, match="eps_min <= eps_max"):
        DQNLoopConfig(eps_min=0.3, eps_max=0.2)
    with pytest.raises(ValueError, match="decoupled mode trains the conv only with UL"):
        DQNLoopConfig(mode="decoupled")


def test_n_step_sums_may_clip_each_reward_to_its_sign_while_the_replay_keeps_raw_rewards():
    replay = Replay(16, (1, 4, 4), frame_stack=1, action_dtype=np.int64)
    replay.add_first(np.zeros((1, 4, 4), np.uint8))
    for t, r in enumerate([5.0, -3.0, 0.0, 2.0]):
        replay.add_step(0, r, np.full((1, 4, 4), t + 1, np.uint8), terminated=t == 3, truncated=False)
    raw = replay.sample_transitions(4, np.random.default_rng(0), n_step=2, gamma=0.5)
    clipped = replay.sample_transitions(4, np.random.default_rng(0), n_step=2, gamma=0.5, sign_rewards=True)
    first = int(np.flatnonzero(raw.obs[:, 0, 0, 0].numpy() == 0)[0])
    assert raw.reward[first] == pytest.approx(5.0 - 1.5) and clipped.reward[first] == pytest.approx(1.0 - 0.5)
    assert replay.rewards[:4].tolist() == [5.0, -3.0, 0.0, 2.0]


def test_a_saved_agent_loads_into_a_fresh_one_and_acts_the_same():
    agent = agent_of("end_to_end", dueling=True)
    for i in range(3):
        agent.update(batch(seed=i))
    fresh = agent_of("end_to_end", dueling=True)
    fresh.load_state_dict(agent.state_dict())
    obs = batch(64, seed=9).obs
    assert fresh.updates == 3 and torch.equal(fresh.greedy(obs), agent.greedy(obs))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(fresh.act(obs, 0.5, g1), agent.act(obs, 0.5, g2))
    with pytest.raises(ValueError, match="saved by a 'end_to_end' agent"):
        agent_of("decoupled").load_state_dict(agent.state_dict())


def _greedy_return(agent: DQNAgent | None, episodes: int, image_size: int) -> float:
    env = make_env("tiny:catch", seed=0, image_size=image_size)
    rng, total = np.random.default_rng(0), 0.0
    for k in range(episodes):
        obs, _ = env.reset(seed=1000 + k)
        done = False
        while not done:
            a = int(rng.integers(3)) if agent is None else int(agent.greedy(torch.from_numpy(obs)[None])[0])
            obs, r, terminated, truncated, _ = env.step(a)
            total, done = total + r, terminated or truncated
    return total / episodes


def test_dqn_learns_tiny_catch_from_pixels():
    # The tiny-dqn preset, seeded, on one CPU thread: 4000 agent steps (about 25 s on a busy 2-core host).
    cfg = replace(RL_PRESETS["tiny-dqn"].config("tiny:catch"), device="cpu", seed=0,
                  fast=FastPathConfig(threads=1))
    start = time.perf_counter()
    run, history = train_dqn(cfg)
    seconds = time.perf_counter() - start
    run.close()
    random = _greedy_return(None, 100, cfg.image_size)
    learned = _greedy_return(run.agent, 100, cfg.image_size)
    assert random < 0.0  # a random paddle misses more often than it catches
    assert learned > 0.8, (learned, history[-1])
    assert run.step == 4000 and run.agent.updates == cfg.updates_due(4000) and seconds < 120


def test_the_loop_keeps_the_conv_fixed_when_frozen_and_lets_only_ul_train_it_when_decoupled():
    small = {"env": "tiny:catch", "steps": 240, "num_envs": 2, "replay_size": 400, "warmup_steps": 40,
             "batch_size": 8, "image_size": 32, "encoder": "dmc", "device": "cpu",
             "fast": FastPathConfig.fp32_eager(threads=1), "dqn": DQNConfig(hidden=16)}
    torch.manual_seed(0)
    conv = ConvEncoder("dmc", OBS)
    before = {k: v.clone() for k, v in conv.state_dict().items()}
    run, _ = train_dqn(DQNLoopConfig(mode="frozen", **small), encoder=conv)
    run.close()
    assert run.agent.updates == 50 and all(torch.equal(before[k], v) for k, v in conv.state_dict().items())

    atc = replace(ATC_PRESETS["atari"], batch_size=16)
    conv = ConvEncoder("dmc", OBS)
    conv.load_state_dict(before)
    run, history = train_dqn(DQNLoopConfig(mode="decoupled", ul="atc", atc=atc, **small), encoder=conv)
    run.close()
    assert all(not torch.equal(before[k], v) for k, v in conv.state_dict().items())  # UL trained it
    assert run.ul is not None and run.ul.updates == run.agent.updates == 50 and "ul/loss" in history[-1][1]
    assert run.agent.mode is EncoderMode.decoupled
    assert not {id(p) for p in run.agent.net.encoder.parameters()} & {id(p) for p in run.agent.rl_parameters()}


def test_a_dqn_run_trains_evaluates_collects_and_exports_through_the_commands(tmp_path, capsys):
    from atcrl.checkpoint import load_checkpoint
    from atcrl.cli import main as atcrl

    run = tmp_path / "run"
    assert atcrl(["train", "--preset", "tiny-dqn", "--steps", "200", "--dqn.warmup-steps", "100",
                  "--eval-every", "100", "--eval-episodes", "2", "--no-tensorboard", "--device", "cpu",
                  "--out", str(run)]) == 0
    capsys.readouterr()
    assert atcrl(["evaluate", "--run", str(run), "--episodes", "2"]) == 0
    assert "step 200" in capsys.readouterr().out
    for explore in ([], ["--explore"]):
        assert atcrl(["collect", "--checkpoint", str(run), "--episodes", "2", *explore,
                      "--out", str(tmp_path / f"data{len(explore)}")]) == 0
    assert atcrl(["export", "--run", str(run), "--out", str(tmp_path / "enc.safetensors")]) == 0
    from atcrl.encoder_io import load_encoder
    from atcrl.train.algorithms import ALGORITHMS

    weights = load_checkpoint(run / "checkpoints", kind="train").state["run"]
    key = ALGORITHMS["dqn"].encoder_key
    exported = load_encoder(tmp_path / "enc.safetensors").state_dict()
    assert all(torch.equal(weights["agent"]["modules"][key + k], v) for k, v in exported.items())
