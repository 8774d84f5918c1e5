"""`atcrl experiment --executor ray` against a real local Ray instance: a tiny plan on tiny:point end to end,
a step killed mid-run (its process SIGKILLed) recorded as failed, and the next run continuing it from its
checkpoint with the same record."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from atcrl.checkpoint import latest_checkpoint
from atcrl.experiments import commands, record
from atcrl.experiments.commands import SACRun
from atcrl.experiments.ray_executor import RayExecutor
from atcrl.experiments.runner import Runner
from atcrl.experiments.scales import TINY_SAC_FLAGS
from atcrl.experiments.spec import Experiment

ray = pytest.importorskip("ray")

ENV = "tiny:point"


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def tiny_plan() -> Experiment:
    data = commands.collect("demos", group="demonstrations", variant="random", seed=0, env=ENV, episodes=4,
                            image_size=32, fast_render=True)
    run = SACRun(1_500, warmup=50, batch_size=16, eval_every=500, eval_episodes=1, fast_render=True, ckpt_every=100,
                 extra=TINY_SAC_FLAGS)
    train = commands.train_sac("rl-s0", group="rl", variant="decoupled-atc", seed=0, env=ENV, preset="dmc-atc", run=run)
    probe = commands.probe("probe-random-s0", group="probe", variant="random", seed=0, env=ENV, encoder="random",
                           data=("demos",), frames=200, depends=("demos",))
    return Experiment("ul-benchmark", "tiny", (0,), "q", "n", (data, train, probe))


def step_process(out: Path, step_id: str) -> int | None:
    """The pid of the `atcrl train` process of this step (working directory OUT, --out STEP)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if b"atcrl.cli" in argv and step_id.encode() in argv and Path(os.readlink(entry / "cwd")) == out:
                return int(entry.name)
        except OSError:
            continue
    return None


def states(out: Path) -> dict[str, dict]:
    return {s["id"]: s for s in json.loads((out / record.RECORD).read_text())["steps"]}


def test_a_tiny_plan_on_ray_with_a_step_killed_mid_run_and_resumed(tmp_path, local_ray):
    out = (tmp_path / "exp").resolve()
    exp = tiny_plan()
    first = threading.Thread(target=lambda: codes.append(
        Runner(exp, out, jobs=2, executor=RayExecutor(cpus=1), echo=lambda _: None).run()))
    codes: list[int] = []
    first.start()
    deadline = time.monotonic() + 240
    while latest_checkpoint(out / "rl-s0" / "checkpoints") is None:
        assert time.monotonic() < deadline and first.is_alive(), "the training step never checkpointed"
        time.sleep(0.2)
    pid = step_process(out, "rl-s0")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # the step dies mid-run, as on a lost node
    first.join(timeout=240)
    assert codes == [1]
    killed = states(out)
    assert killed["rl-s0"]["status"] == "failed" and killed["rl-s0"]["returncode"] == -signal.SIGKILL
    assert killed["demos"]["status"] == killed["probe-random-s0"]["status"] == "done"
    assert killed["rl-s0"]["attempts"][0]["executor"] == "ray"
    assert killed["rl-s0"]["attempts"][0]["machine"]["cpu"]  # the worker's machine, returned by its task

    # The same command again: finished steps are skipped, the killed one continues from its checkpoint.
    logs = {p.name: p.stat().st_size for p in out.glob("*.log")}
    assert Runner(exp, out, jobs=2, executor=RayExecutor(cpus=1), echo=lambda _: None).run() == 0
    after = states(out)
    rl = after["rl-s0"]
    assert rl["status"] == "done" and rl["ran_command"][-2:] == ["--resume", "rl-s0"]
    assert [a["continued"] for a in rl["attempts"]] == [False, True]
    assert rl["wall_time_s"] == pytest.approx(sum(a["wall_time_s"] for a in rl["attempts"]), abs=0.11)
    assert json.loads((out / "rl-s0" / "summary.json").read_text())["steps"] == 1_500
    assert {p.name for p in out.glob("*.log") if p.stat().st_size != logs[p.name]} == {"rl-s0.log"}
    assert "==== " in (out / "rl-s0.log").read_text()  # the step's output came back to OUT/<step>.log


def test_an_interrupted_ray_task_stops_its_step_at_a_checkpoint(tmp_path, local_ray):
    """The runner's Ctrl-C cancels the task: it forwards one SIGINT, and `atcrl train` checkpoints and exits."""
    out = tmp_path.resolve()
    train = tiny_plan().step("rl-s0")
    executor = RayExecutor(cpus=1)
    handle = executor.start(list(train.command), out, {}, out / train.log, gpu=True)
    deadline = time.monotonic() + 240
    while latest_checkpoint(out / "rl-s0" / "checkpoints") is None:
        assert time.monotonic() < deadline and handle.poll() is None, "the training step never checkpointed"
        time.sleep(0.2)
    handle.interrupt()
    assert handle.wait(timeout=180) is not None
    summary = json.loads((out / "rl-s0" / "summary.json").read_text())
    assert 0 < summary["steps"] < 1_500  # stopped early, at a safe point, with its summary
    assert latest_checkpoint(out / "rl-s0" / "checkpoints") is not None
    assert handle.where()["machine"]["cpu"]
    executor.close()  # a Ray instance the executor did not start stays up
    assert ray.is_initialized()
