"""PPOLoopConfig.overlap_ul: UL updates in a worker thread while the main thread collects with a conv copy."""

from __future__ import annotations

import copy
import itertools
import json
import math
import threading
from dataclasses import replace

import gymnasium as gym
import numpy as np
import pytest
import torch
from test_ppo import changed, small_loop, snapshot
from test_train_resume import PPO, final_state, same_tree

from atcrl.checkpoint import load_checkpoint, save_checkpoint
from atcrl.cli import main as atcrl
from atcrl.metrics_log import read_jsonl
from atcrl.rl.rollout import Rollout
from atcrl.train.ppo_loop import HeldWrites, PPOLoopConfig, build_run, collect, iterate, seeded, train


def overlapped(**kw) -> PPOLoopConfig:
    """Decoupled PPO + ATC on tiny:catch, UL from the first iteration (4 envs x 16 steps per iteration)."""
    return small_loop(mode="decoupled", overlap_ul=True, **kw)


def empty_rollout(run) -> Rollout:
    return Rollout.empty(run.cfg.horizon, run.cfg.num_envs, *run.agent.policy_input_spec(), run.device)


def test_overlapped_decoupled_atc_trains_the_conv_only_by_ul_and_reports_finite_metrics():
    cfg = overlapped(steps=4 * 64, rl_start_steps=64)
    run = build_run(cfg)
    ul_threads: list[threading.Thread] = []
    real_ul_update = run.ul.update

    def ul_update(rng, n):
        ul_threads.append(threading.current_thread())
        return real_ul_update(rng, n)

    conv_across_ppo = []
    real_ppo_update = run.agent.update

    def ppo_update(*args, **kwargs):
        before = snapshot(run.agent.net.encoder)
        out = real_ppo_update(*args, **kwargs)
        conv_across_ppo.append(not changed(before, run.agent.net.encoder))
        return out

    run.ul.update, run.agent.update = ul_update, ppo_update
    snaps = [(snapshot(run.agent.net.encoder), snapshot(run.agent.net.head))]
    history = train(run, on_iteration=lambda r: snaps.append((snapshot(r.agent.net.encoder),
                                                              snapshot(r.agent.net.head))))
    assert [s for s, _ in history] == [64, 128, 192, 256]
    for _, m in history:
        assert all(math.isfinite(v) for v in m.values()), m
        assert {"ul/loss", "ul/accuracy", "ul/grad_norm", "ul/lr", "perf/ul_s", "perf/collect_s"} <= m.keys()
    # Iteration 0 finds the UL replay empty and runs serially; every later one overlaps.
    assert "perf/ul_wait_s" not in history[0][1]
    assert all("perf/ul_wait_s" in m for _, m in history[1:])
    assert ul_threads[0] is threading.main_thread()
    assert all(t is not threading.main_thread() and t.name.startswith("atcrl-ul") for t in ul_threads[1:])
    assert len(ul_threads) == 4
    assert history[-1][1]["ul/updates"] == sum(cfg.ul_updates_at(i) for i in range(4))
    assert "rl/loss" not in history[0][1] and all("rl/loss" in m for _, m in history[1:])
    # UL moves the conv in every iteration; the heads wait for RL; PPO never writes the conv.
    for (enc0, _), (enc1, _) in itertools.pairwise(snaps):
        assert any(not torch.equal(enc0[k], enc1[k]) for k in enc0)
    assert all(torch.equal(snaps[0][1][k], snaps[1][1][k]) for k in snaps[0][1])
    for (_, head0), (_, head1) in itertools.pairwise(snaps[1:]):
        assert any(not torch.equal(head0[k], head1[k]) for k in head0)
    assert conv_across_ppo == [True, True, True]
    assert run.ul_overlap is None  # train stopped the worker thread


def test_the_policy_acts_with_the_conv_as_it_was_before_the_iterations_ul_updates():
    cfg = overlapped()
    run = build_run(cfg)
    rollout = empty_rollout(run)
    iterate(run, rollout)  # iteration 0: serial (nothing in the UL replay yet)
    net_before = copy.deepcopy(run.agent.net)
    # Make every act of this iteration wait until the worker's UL updates have all changed the conv.
    ul_done = threading.Event()
    real_ul_update = run.ul.update

    def ul_update(rng, n):
        out = real_ul_update(rng, n)
        ul_done.set()
        return out

    seen = []
    real_act = run.agent.act

    def act(obs, **kwargs):
        assert ul_done.wait(30), "the UL updates did not run while collecting"
        out = real_act(obs, **kwargs)
        seen.append((torch.as_tensor(obs).clone(), out.policy_input.clone(), out.value.clone()))
        return out

    run.ul.update, run.agent.act = ul_update, act
    metrics, _ = iterate(run, rollout)
    try:
        assert "perf/ul_wait_s" in metrics and len(seen) == cfg.horizon
        conv_now = run.agent.net.encoder
        assert changed(snapshot(net_before.encoder), conv_now)
        with torch.no_grad():
            for obs, features, value in seen:  # decoupled: the rollout stores the features acted on
                torch.testing.assert_close(features, net_before.features(obs))
                torch.testing.assert_close(value, net_before.heads(features)[1])
                assert not torch.allclose(features, conv_now(obs).flatten(1))
            last = torch.from_numpy(run.obs)
            torch.testing.assert_close(rollout.last_values, net_before.heads(net_before.features(last))[1])
    finally:
        run.stop_ul_thread()
    assert run.agent.acting_encoder is None  # the snapshot is only used while collecting


def test_ul_updates_sample_only_the_rollouts_before_the_current_one():
    cfg = overlapped(steps=4 * 64)
    run = build_run(cfg)
    seen = []  # (iteration, on the main thread, replay sizes) of every UL batch
    real_sample = run.ul.sample

    def sample(rng):
        seen.append((run.iteration, threading.current_thread() is threading.main_thread(),
                     [len(r) for r in run.ul.replays]))
        return real_sample(rng)

    run.ul.sample = sample
    after: dict[int, list[int]] = {}  # replay sizes after each iteration
    train(run, on_iteration=lambda r: after.__setitem__(r.iteration - 1, [len(x) for x in r.ul.replays]))
    assert all(a < b for k in range(3) for a, b in zip(after[k], after[k + 1]))  # every rollout grew them
    assert sorted({itr for itr, _, _ in seen}) == [0, 1, 2, 3]
    for itr, on_main, sizes in seen:
        if itr == 0:  # the replay is empty before the first rollout: UL runs after collecting it, serially
            assert on_main and sizes == after[0]
        else:
            assert not on_main and sizes == after[itr - 1], (itr, sizes, after)


class ReusedObsBuffer(gym.vector.VectorWrapper):
    """Returns every observation in one array overwritten in place, as shared-memory vector envs may."""

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.buffer = obs.copy()
        return self.buffer, info

    def step(self, actions):
        obs, *rest = self.env.step(actions)
        self.buffer[...] = obs
        return (self.buffer, *rest)


def test_held_replay_writes_equal_direct_ones_even_when_the_env_reuses_its_buffers():
    cfg = overlapped()
    direct, held_run = build_run(cfg), build_run(cfg)
    for run in (direct, held_run):
        run.env = ReusedObsBuffer(run.env)
    held = [HeldWrites() for _ in range(cfg.num_envs)]
    assert collect(direct, None) == collect(held_run, None, held)  # random actions: the same episodes
    assert all(len(r) == 0 for r in held_run.ul.replays)
    for h, replay in zip(held, held_run.ul.replays):
        h.apply_to(replay)
        assert not h.writes
    for a, b in zip(direct.ul.replays, held_run.ul.replays):
        assert len(a) > cfg.horizon and same_tree(a.state_dict(), b.state_dict())


def test_a_nan_ul_loss_in_the_worker_thread_stops_train_with_floating_point_error():
    run = build_run(overlapped(steps=4 * 64))
    threads = []
    real_loss = run.ul.objective.loss

    def loss(batch):
        value, metrics = real_loss(batch)
        threads.append(threading.current_thread())
        return (value * float("nan") if run.iteration == 2 else value), metrics

    run.ul.objective.loss = loss
    checkpoints = []
    with pytest.raises(FloatingPointError, match="ATC loss is nan"):
        train(run, on_iteration=lambda r: checkpoints.append(r.iteration))
    assert checkpoints == [1, 2]  # nothing after the failed iteration reached on_iteration
    assert threads[-1] is not threading.main_thread() and run.iteration == 2
    assert run.ul_overlap is None and run.agent.acting_encoder is None


def serial_reference(cfg: PPOLoopConfig):
    """The loop as written before overlap_ul: collect, PPO update, UL updates, one after the other."""
    run = build_run(cfg)
    rollout = empty_rollout(run)
    for itr in range(cfg.iterations):
        rl_on = itr >= cfg.start_iterations()[1]
        collect(run, rollout if rl_on else None)
        if rl_on:
            run.agent.update(rollout, progress=itr / cfg.iterations, generator=seeded(cfg.seed, itr, 1))
        if n := cfg.ul_updates_at(itr):
            run.ul.update(np.random.default_rng([cfg.seed, itr, 2]), n)
        run.iteration += 1
    return run


def test_overlap_off_is_the_default_and_trains_bit_identically_to_the_serial_schedule():
    cfg = small_loop(mode="decoupled", steps=3 * 64)
    assert cfg.overlap_ul is False and PPOLoopConfig().overlap_ul is False
    reference = serial_reference(cfg)
    runs, histories = [], []
    for c in (cfg, replace(cfg, overlap_ul=False), replace(cfg, overlap_ul=True)):
        runs.append(build_run(c))  # build, then train: the augmentations draw from torch's global RNG
        histories.append(train(runs[-1]))
    default, off, on = runs
    for run in (default, off):
        assert same_tree(run.state_dict(), reference.state_dict())
        for a, b in zip(run.ul.replays, reference.ul.replays):
            assert same_tree(a.state_dict(), b.state_dict())
    assert not same_tree(on.state_dict(), reference.state_dict())  # the lag changes what UL sees
    again = build_run(on.cfg)
    train(again)
    assert same_tree(again.state_dict(), on.state_dict())  # but the threads leave no trace: reproducible
    for (s0, m0), (s1, m1) in zip(*histories[:2]):
        assert s0 == s1 and {k: v for k, v in m0.items() if not k.startswith("perf/")} == {
            k: v for k, v in m1.items() if not k.startswith("perf/")}
    assert not any("perf/ul_wait_s" in m for h in histories[:2] for _, m in h)


def test_a_run_saved_without_overlap_continues_with_it(tmp_path):
    cfg = small_loop(mode="decoupled", steps=2 * 64)
    run = build_run(cfg)
    train(run)
    path = save_checkpoint(tmp_path / "ckpt.pt", run.state_dict(), kind="ppo", config=cfg)
    longer = replace(cfg, steps=4 * 64, overlap_ul=True)
    resumed = build_run(longer)
    resumed.load_state_dict(load_checkpoint(path, kind="ppo").state)
    history = train(resumed)
    assert [s for s, _ in history] == [3 * 64, 4 * 64] and resumed.step == 4 * 64 and resumed.iteration == 4
    # The UL replay restarts empty: the first iteration after loading runs serially, the next one overlaps.
    assert "perf/ul_wait_s" not in history[0][1] and "perf/ul_wait_s" in history[1][1]
    assert resumed.ul.updates == run.ul.updates + longer.ul_updates_at(2) + longer.ul_updates_at(3)
    assert resumed.agent.iterations == 4


def test_overlap_may_be_switched_on_and_off_on_resume(tmp_path, capsys):
    run = tmp_path / "ppo"
    assert atcrl(["train", *PPO, "--steps", "384", "--ckpt-every", "128", "--stop-after", "128",
                  "--checkpoint-replay", "--out", str(run)]) == 0
    assert atcrl(["train", "--resume", str(run), "--ppo.overlap-ul", "True", "--stop-after", "256"]) == 0
    assert final_state(run)["step"] == 256
    assert atcrl(["train", "--resume", str(run), "--ppo.overlap-ul", "False"]) == 0
    end = final_state(run)
    assert end["step"] == 384 and end["run"]["iteration"] == 3
    waits = [r["step"] for r in read_jsonl(run / "metrics.jsonl") if "perf/ul_wait_s" in r]
    assert waits == [256]  # with the saved replay, the resumed iteration overlapped at once
    assert json.loads((run / "config.json").read_text())["loop"]["overlap_ul"] is False  # the run's setting
    assert "resuming" in capsys.readouterr().err
