"""One writer per directory: the lock itself, and two `atcrl collect` / `atcrl train` writers on one directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from reltools import CHILD_ENV, one_line_error, run, snapshot, start, tiny_episode, wait_for

from atcrl.checkpoint import list_checkpoints
from atcrl.data.dataset import DatasetWriter, open_dataset, read_meta, validate_dataset
from atcrl.metrics_log import read_jsonl
from atcrl.runlock import LOCK_FILE, DirLockedError, hold_dir_lock, lock_dir

_HOLDER = "import sys, time; from atcrl.runlock import lock_dir; l = lock_dir(sys.argv[1]); print('locked', flush=True); time.sleep(120)"


def holder(directory) -> subprocess.Popen:
    """A child process that holds ``directory``'s lock until killed."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(directory)], env=CHILD_ENV, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_lock_names_the_holder_and_kill_9_releases_it(tmp_path):
    proc = holder(tmp_path / "d")
    try:
        with pytest.raises(DirLockedError, match=rf"PID {proc.pid} \(.*time\.sleep"):
            lock_dir(tmp_path / "d", what="dataset")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    lock = lock_dir(tmp_path / "d")  # the kernel dropped the dead holder's lock
    assert (tmp_path / "d" / LOCK_FILE).read_text().startswith(f"{os.getpid()}\n")
    lock.release()
    assert (tmp_path / "d" / LOCK_FILE).read_text() == ""  # a released lock names no holder


def test_a_second_writer_in_the_same_process_is_refused_until_the_first_closes(tmp_path):
    episode, meta = tiny_episode()
    first = DatasetWriter(tmp_path / "ds", meta)
    first.add(episode)
    with pytest.raises(DirLockedError, match=f"dataset {tmp_path / 'ds'} is being written by PID {os.getpid()}"):
        DatasetWriter(tmp_path / "ds", meta, append=True)
    first.close()
    DatasetWriter(tmp_path / "ds", meta, append=True).add(episode)
    assert len(open_dataset(tmp_path / "ds")) == 2


def test_fresh_lock_refuses_a_directory_another_writer_filled(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text("{}")
    with pytest.raises(FileExistsError, match="no longer empty"):
        lock_dir(tmp_path / "run", fresh=True)
    assert hold_dir_lock(tmp_path / "new", fresh=True) is hold_dir_lock(tmp_path / "new")  # held: a no-op


def test_two_collect_appends_at_once_the_second_is_refused_and_the_first_completes(tmp_path):
    out = tmp_path / "D"
    common = ["collect", "--env", "tiny:point", "--image-size", "16", "--append", "--out", out]
    first = start([*common, "--episodes", "1000", "--seed", "1"])
    wait_for(lambda: (out / LOCK_FILE).exists() and (out / LOCK_FILE).read_text().startswith(f"{first.pid}\n"), first)
    second = run([*common, "--episodes", "1500", "--seed", "2"])
    assert first.poll() is None, "the first collect ended before the second one tried; the test proves nothing"
    assert second.returncode == 1
    line = one_line_error(second.stderr)
    assert f"dataset {out} is being written by PID {first.pid}" in line and "collect" in line
    assert first.wait(timeout=120) == 0, first.stderr.read()
    first.stderr.close()
    report = validate_dataset(out)
    assert report.ok and report.num_episodes == 1000 and not report.temp_files
    assert read_meta(out).extra["collect"]["seed"] == 1


def _train_args(out, steps: int) -> list[object]:
    """A tiny SAC run that only acts randomly (warm-up to the end): fast, and it checkpoints every 25 steps."""
    return ["train", "--env", "tiny:point", "--sac.image-size", "32", "--sac.frame-stack", "1",
            "--sac.warmup-steps", str(steps), "--sac.replay-capacity", "1000", "--sac.batch-size", "16",
            "--sac.agent.hidden", "32", "32", "--sac.agent.latent-dim", "8", "--sac.log-every", "25",
            "--eval-every", "0", "--eval-episodes", "1", "--ckpt-every", "25", "--steps", str(steps),
            "--no-tensorboard", "--out", out]


def _logged_steps(run_dir) -> list[int]:
    return [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if "perf/steps_per_s" in r]


def test_two_trains_into_one_new_directory_only_one_runs(tmp_path):
    out = tmp_path / "X"
    procs = [start(_train_args(out, 200)) for _ in range(2)]
    codes = [p.wait(timeout=300) for p in procs]
    errors = [p.stderr.read() for p in procs]
    for p in procs:
        p.stderr.close()
    assert sorted(codes) in ([0, 1], [0, 2]), (codes, errors)  # 1: the lock refused it; 2: the directory was full
    assert str(out) in one_line_error(errors[codes.index(max(codes))])
    assert _logged_steps(out) == list(range(25, 201, 25))  # one run's rows, each once


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A run stopped at step 25 of 100k random-acting steps: a resume of it runs until stopped."""
    out = tmp_path_factory.mktemp("runs") / "R"
    assert run([*_train_args(out, 100_000), "--stop-after", "25"], timeout=300).returncode == 0
    return out


def test_a_held_lock_refuses_resume_and_append_without_touching_anything(tmp_path, stopped_run):
    run_dir, data = stopped_run, tmp_path / "D"
    assert run(["collect", "--env", "tiny:point", "--image-size", "16", "--episodes", "2", "--out", data]).returncode == 0
    for directory, args in ((run_dir, ["train", "--resume", run_dir]),
                            (data, ["collect", "--env", "tiny:point", "--image-size", "16", "--episodes", "4",
                                    "--append", "--out", data])):
        proc = holder(directory)
        try:
            before = snapshot(directory)
            refused = run(args, timeout=300)
            assert refused.returncode == 1
            assert f"is being written by PID {proc.pid}" in one_line_error(refused.stderr)
            assert snapshot(directory) == before
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stdout.close()


def test_two_resumes_of_one_run_the_second_is_refused(stopped_run):
    out = stopped_run
    first = start(["train", "--resume", out])
    wait_for(lambda: (out / LOCK_FILE).read_text().startswith(f"{first.pid}\n"), first, timeout=300)
    second = run(["train", "--resume", out], timeout=300)
    assert first.poll() is None, "the first resume ended before the second one tried; the test proves nothing"
    assert second.returncode == 1
    assert f"run directory {out} is being written by PID {first.pid}" in one_line_error(second.stderr)
    first.send_signal(signal.SIGINT)  # the first stops cleanly, with a checkpoint
    assert first.wait(timeout=120) in (0, 130), first.stderr.read()  # (the code of a clean Ctrl-C stop)
    assert list_checkpoints(out / "checkpoints")[-1][0] > 25
    first.stderr.close()
    steps = _logged_steps(out)
    assert steps == list(range(25, steps[-1] + 1, 25))  # no row twice, none missing
