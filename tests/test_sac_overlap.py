"""SAC's overlap_env: the train env steps on its own worker thread while the update runs (one-transition lag)."""

from __future__ import annotations

import dataclasses
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from test_sac import POINT, SMALL, random_policy_return
from test_train_resume import SAC, final_state, strip_loop_field

from atcrl.cli import main as atcrl
from atcrl.envs import make_env
from atcrl.envs.tiny import TinyPoint
from atcrl.rl.modes import EncoderMode
from atcrl.rl.sac import SACConfig
from atcrl.train import rl_checkpoint as ckpts
from atcrl.train import sac_loop
from atcrl.train.sac_loop import SACLoopConfig, build_run, train

TINY = dataclasses.replace(POINT, mode=EncoderMode.end_to_end, batch_size=8, warmup_steps=20, steps=40,
                           eval_episodes=0, log_every=20)
"""20 warm-up steps, then 20 steps with one update each (tiny:point episodes are 50 steps)."""


def run_to_end(cfg: SACLoopConfig, **build_kwargs):
    run = build_run(cfg, **build_kwargs)
    try:
        return run, train(run)
    finally:
        run.close()


def worker_alive(ident: int) -> bool:
    return any(t.ident == ident and t.is_alive() for t in threading.enumerate())


def record_calls(monkeypatch, cls, *names: str) -> list[tuple[str, int, int]]:
    """Patch methods of ``cls`` to log (method, id(instance), thread ident) before running."""
    calls: list[tuple[str, int, int]] = []
    for name in names:
        original = getattr(cls, name)

        def wrapper(self, *args, _name=name, _original=original, **kwargs):
            calls.append((_name, id(self), threading.get_ident()))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, wrapper)
    return calls


# --- off: unchanged; on: deterministic -------------------------------------------------------------------


def test_overlap_off_is_bit_identical_to_a_run_without_the_flag_and_on_differs_yet_is_reproducible():
    base = dataclasses.replace(TINY, mode=EncoderMode.decoupled, eval_episodes=1)
    runs = {name: run_to_end(cfg) for name, cfg in {
        "default": base, "off": dataclasses.replace(base, overlap_env=False),
        "on": dataclasses.replace(base, overlap_env=True), "on_again": dataclasses.replace(base, overlap_env=True),
    }.items()}
    assert SACLoopConfig().overlap_env is False

    def weights(name):
        return runs[name][0].agent.state_dict()["modules"]

    def same(a, b):
        return all(torch.equal(weights(a)[k], weights(b)[k]) for k in weights(a))

    def curve(name):  # every reported metric except the timings
        return [(s, {k: v for k, v in m.items() if k != "perf/steps_per_s"}) for s, m in runs[name][1]]

    assert same("default", "off") and curve("default") == curve("off")
    assert same("on", "on_again") and curve("on") == curve("on_again")  # the worker thread adds no randomness
    assert not same("off", "on")  # the lag changes what the updates see
    assert runs["on"][0].agent.updates == runs["off"][0].agent.updates == 20


# --- the one-transition lag, and the overlap itself ---------------------------------------------------------


@pytest.mark.parametrize(("overlap", "lag"), [(True, 1), (False, 0)])
def test_the_update_of_step_t_sees_transition_t_minus_1_but_not_t_only_with_overlap(monkeypatch, overlap, lag):
    run = build_run(dataclasses.replace(TINY, overlap_env=overlap))
    actions: list[np.ndarray] = []  # a_0 .. a_t as acted
    seen: list[tuple[int, int, bool, bool]] = []  # per update: (acted, transitions, has a_{t-1}, has a_t)
    act, update = run.agent.act, sac_loop.update

    def recording_act(*args, **kwargs):
        action = act(*args, **kwargs)
        actions.append(np.array(action, copy=True))
        return action

    def recording_update(r):
        stored = r.replay.actions[: len(r.replay)]
        has = lambda a: bool((stored == a).all(axis=1).any())
        seen.append((len(actions), r.replay.num_transitions, has(actions[-2]), has(actions[-1])))
        return update(r)

    run.agent.act = recording_act
    monkeypatch.setattr(sac_loop, "update", recording_update)
    try:
        train(run)
    finally:
        run.close()
    assert len(seen) == 20 and [n for n, *_ in seen] == list(range(21, 41))  # updates at steps t = 20 .. 39
    for acted, transitions, has_previous, has_current in seen:
        assert transitions == acted - lag  # transitions 0 .. t - lag
        assert has_previous and has_current == (lag == 0)


def test_the_env_step_of_step_t_runs_while_the_update_of_step_t_runs(monkeypatch):
    # Both sides meet at a barrier: with the steps in sequence (or paired with another step's update)
    # one side would wait alone and the barrier would break after its timeout.
    run = build_run(dataclasses.replace(TINY, overlap_env=True))
    barrier = threading.Barrier(2, timeout=10)
    train_env, step, update = run.env.unwrapped, TinyPoint.step, sac_loop.update
    steps = 0

    def meeting_step(self, action):
        nonlocal steps
        if self is train_env:
            steps += 1
            if steps > TINY.warmup_steps:
                barrier.wait()
        return step(self, action)

    def meeting_update(r):
        barrier.wait()
        return update(r)

    monkeypatch.setattr(TinyPoint, "step", meeting_step)
    monkeypatch.setattr(sac_loop, "update", meeting_update)
    try:
        train(run)
    finally:
        run.close()
    assert run.agent.updates == 20 and steps == 40 and not barrier.broken


# --- the worker thread owns the env ---------------------------------------------------------------------------


def test_the_train_env_is_made_stepped_and_closed_on_its_worker_thread_only(monkeypatch):
    calls = record_calls(monkeypatch, TinyPoint, "__init__", "reset", "step", "close")
    run = build_run(dataclasses.replace(TINY, overlap_env=True, eval_every=20, eval_episodes=1))
    worker, main = run.env.thread_id, threading.get_ident()
    train_env, eval_env = id(run.env.unwrapped), id(run.eval_env.unwrapped)
    try:
        train(run)
        # Checkpoint and restore of the env's reset RNGs (train_session) go through the worker too.
        ckpts.set_env_rng_state(run.env, ckpts.env_rng_state(run.env))
    finally:
        run.close()
    threads = {}
    for name, env, ident in calls:
        threads.setdefault((env, name), set()).add(ident)
    assert worker != main
    for name in ("__init__", "reset", "step", "close"):
        assert threads[(train_env, name)] == {worker}, name
    assert threads[(eval_env, "step")] == {main}  # evaluation stays on the calling thread
    assert sum(1 for name, env, _ in calls if env == train_env and name == "step") == 40
    assert not worker_alive(worker)  # closing the run ended the worker


class EnvFailure(Exception):
    pass


@pytest.mark.parametrize("where", ["warm-up step", "overlapped step", "update"])
def test_an_error_in_the_env_or_the_update_ends_train_and_the_worker_still_closes(monkeypatch, where):
    run = build_run(dataclasses.replace(TINY, overlap_env=True))
    train_env, step, update = run.env.unwrapped, TinyPoint.step, sac_loop.update
    fail_at = {"warm-up step": 5, "overlapped step": 25, "update": None}[where]
    steps = 0

    def failing_step(self, action):
        nonlocal steps
        if self is train_env:
            steps += 1
            if steps == fail_at:
                raise EnvFailure(f"env step {steps}")
        return step(self, action)

    def failing_update(r):
        if where == "update" and r.agent.updates == 3:
            raise FloatingPointError("critic loss is nan")
        return update(r)

    monkeypatch.setattr(TinyPoint, "step", failing_step)
    monkeypatch.setattr(sac_loop, "update", failing_update)
    expected = FloatingPointError if where == "update" else EnvFailure
    with pytest.raises(expected):
        train(run)
    assert run.step == (fail_at - 1 if fail_at else 23)
    run.close()  # returns (no hang), and ends the worker
    assert not worker_alive(run.env.thread_id)
    with pytest.raises(RuntimeError, match="closed"):
        run.env.step(np.zeros(2))


def test_a_run_that_fails_to_build_closes_both_envs_and_ends_the_worker_at_once(monkeypatch):
    calls = record_calls(monkeypatch, TinyPoint, "__init__", "close")
    before = {t.ident for t in threading.enumerate()}
    with pytest.raises(ValueError, match="needs a pretrained encoder"):  # fails after the envs are made
        build_run(dataclasses.replace(TINY, overlap_env=True, mode=EncoderMode.frozen))
    made = [env for name, env, _ in calls if name == "__init__"]
    closed = [env for name, env, _ in calls if name == "close"]
    assert len(made) == 2 and sorted(closed) == sorted(made)
    assert not [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]


# --- learning and a real simulator ---------------------------------------------------------------------------


def test_sac_with_overlap_still_learns_tiny_point():
    # A shorter version of test_sac's learning test (300 instead of 600 steps, 32 px): random policy ~0,
    # the untrained actor ~-28, this run ~22; test_sac's threshold is the random policy + 15.
    cfg = dataclasses.replace(POINT, mode=EncoderMode.end_to_end, steps=300, warmup_steps=100, eval_every=300,
                              eval_episodes=10, log_every=300, sac=SACConfig(hidden=(64, 64)), overlap_env=True)
    _, history = run_to_end(cfg)
    evals = [m["eval/return_mean"] for _, m in history if "eval/return_mean" in m]
    untrained, learned = evals[0], evals[-1]
    assert learned > random_policy_return(20, seed=1) + 15 and learned > untrained + 30, evals


def test_overlap_on_dm_control_renders_on_the_worker_and_continues_after_an_rng_restore(monkeypatch):
    pytest.importorskip("dm_control")
    from atcrl.envs.dmc import DMCFrames

    calls = record_calls(monkeypatch, DMCFrames, "_frame")
    cfg = SACLoopConfig(env="dmc:cartpole-swingup", mode=EncoderMode.decoupled, image_size=32, fast_render=True,
                        steps=30, warmup_steps=20, batch_size=16, replay_capacity=200, eval_every=0, eval_episodes=0,
                        log_every=10, sac=SMALL, overlap_env=True)
    run = build_run(cfg)
    worker, main = run.env.thread_id, threading.get_ident()
    try:
        train(run)
        # As after a resume: restore the reset RNGs (a reset on the worker), then train on.
        ckpts.set_env_rng_state(run.env, ckpts.env_rng_state(run.env))
        run.obs = None
        run.cfg = dataclasses.replace(cfg, steps=35, eval_episodes=1)  # one evaluation, at the end
        history = train(run)
        frames = run.replay.frames[: len(run.replay)]
    finally:
        run.close()
    renders = {ident for _, env, ident in calls if env == id(run.env.unwrapped)}
    assert renders == {worker} and worker != main
    assert {ident for _, env, ident in calls if env == id(run.eval_env.unwrapped)} == {main}
    assert run.agent.updates == 15 and np.isfinite(history[-1][1]["eval/return_mean"])
    assert frames.std() > 0 and len({f.tobytes() for f in frames}) > len(frames) // 2  # real, changing pictures
    assert not worker_alive(worker)
    if os.environ.get("MUJOCO_GL") == "egl":
        # What the worker thread prevents: dm_control's EGL contexts run GL on the calling thread and refuse
        # to become current on a second thread, so an env rendered here cannot be stepped from another one.
        env = make_env("dmc:cartpole-swingup", seed=0, image_size=32)
        env.reset()
        with ThreadPoolExecutor(1) as pool, pytest.raises(RuntimeError, match="current on another thread"):
            pool.submit(env.step, np.zeros(1)).result()
        env.close()


# --- resume across the option ---------------------------------------------------------------------------


def test_a_run_resumes_with_the_option_switched_either_way_and_from_before_the_field(tmp_path):
    args = [*SAC, "--steps", "150", "--ckpt-every", "50", "--checkpoint-replay"]
    for first, then in (("False", "True"), ("True", "False")):
        run = tmp_path / f"from-{first}"
        assert atcrl(["train", *args, "--sac.overlap-env", first, "--stop-after", "100", "--out", str(run)]) == 0
        assert atcrl(["train", "--resume", str(run), "--sac.overlap-env", then]) == 0
        state = final_state(run)
        assert state["step"] == 150 and state["run"]["agent"]["updates"] == 100
    # A run directory written before the field existed has no "overlap_env" anywhere.
    run = tmp_path / "old"
    assert atcrl(["train", *args, "--stop-after", "100", "--out", str(run)]) == 0
    strip_loop_field(run, "overlap_env", algos=("sac",))
    assert atcrl(["train", "--resume", str(run), "--sac.overlap-env", "True"]) == 0
    assert final_state(run)["step"] == 150
