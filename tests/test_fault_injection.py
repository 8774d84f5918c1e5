"""Fault injection: every byte of an episode file and of a checkpoint flipped, `collect` and `pretrain` killed
with SIGKILL at seeded random moments and resumed, and a table of bad inputs.

Each test writes its figures (points, flips, outcomes) to ``<dir>/<test>.json`` and asserts on what it wrote;
``<dir>`` is $ATCRL_FAULT_FIGURES when set (docs/reliability.md quotes those figures), else a pytest tmp dir.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from reltools import one_line_error, point_dataset, snapshot, start, tiny_episode, wait_for

from atcrl.checkpoint import CheckpointError, list_checkpoints, load_checkpoint, save_checkpoint
from atcrl.cli import main as atcrl
from atcrl.data.dataset import (
    CorruptEpisodeError,
    DatasetWriter,
    episode_files,
    open_dataset,
    read_episode,
    read_meta,
    summarize_episode,
    validate_dataset,
)
from atcrl.encoder_io import load_encoder
from atcrl.envs import make_env
from atcrl.metrics_log import read_jsonl
from atcrl.train.collect import collect_episodes, random_policy

SEED = 18
KILLS = 10
MASKS = (0xFF, 0x01)
"""Each byte is flipped once per mask: all its bits, and its lowest bit."""


@pytest.fixture(scope="module")
def figures_dir(tmp_path_factory) -> Path:
    where = os.environ.get("ATCRL_FAULT_FIGURES")
    path = Path(where) if where else tmp_path_factory.mktemp("figures")
    path.mkdir(parents=True, exist_ok=True)
    return path


def record(figures_dir: Path, name: str, figures: dict) -> dict:
    """Write one test's figures and read them back: the assertions check what was written."""
    (figures_dir / f"{name}.json").write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    return json.loads((figures_dir / f"{name}.json").read_text())


# --------------------------------------------------------------------------- byte flips


def _same_episode(a, b) -> bool:
    arrays = ("frames", "actions", "rewards", "physics")
    return all(np.array_equal(getattr(a, k), getattr(b, k)) for k in arrays) and (
        (a.terminated, a.truncated, a.task) == (b.terminated, b.truncated, b.task))


def _outcome(action, same, error_type, path: Path) -> str:
    """"identical", "named-error" (one line naming ``path``), "silent" (loaded but different) or the
    name of an exception that escaped."""
    try:
        result = action()
    except error_type as e:
        message = str(e)
        return "named-error" if str(path) in message and "\n" not in message else f"unnamed:{message}"
    except Exception as e:  # noqa: BLE001 - counting what escapes is the point
        return f"uncaught:{type(e).__name__}"
    return "identical" if same(result) else "silent"


def each_flip(path: Path, original: bytes) -> Iterator[int]:
    """Write ``original`` with one byte flipped to ``path``, for every byte and mask; restore it at the end."""
    for mask in MASKS:
        for i in range(len(original)):
            damaged = bytearray(original)
            damaged[i] ^= mask
            path.write_bytes(damaged)
            yield i
    path.write_bytes(original)


def test_every_byte_flip_of_an_episode_file_is_harmless_or_named(tmp_path, figures_dir):
    episode, meta = tiny_episode()
    writer = DatasetWriter(tmp_path / "ds", meta)
    path = writer.add(episode)
    writer.close()
    original, summary = path.read_bytes(), summarize_episode(path, meta)
    outcomes: Counter[str] = Counter()
    for _ in each_flip(path, original):
        outcomes["scan " + _outcome(lambda: summarize_episode(path, meta), lambda s: s == summary,
                                    CorruptEpisodeError, path)] += 1
        outcomes["load " + _outcome(lambda: read_episode(path, meta), lambda e: _same_episode(e, episode),
                                    CorruptEpisodeError, path)] += 1
    figures = record(figures_dir, "episode_flips", {
        "file_bytes": len(original), "masks": len(MASKS), "flips": len(original) * len(MASKS),
        "outcomes": dict(outcomes)})
    bad = {k: n for k, n in figures["outcomes"].items() if k.split()[1] not in ("identical", "named-error")}
    assert not bad, bad
    assert sum(figures["outcomes"].values()) == 2 * figures["flips"]
    assert figures["outcomes"]["load named-error"] > figures["flips"] / 2  # most flips are damage, and found


def test_every_byte_flip_of_a_checkpoint_is_harmless_named_or_falls_back(tmp_path, figures_dir, capsys):
    state = {"weights": torch.arange(24, dtype=torch.float32).reshape(4, 6), "step": 7, "nested": {"name": "x",
             "ints": torch.tensor([1, 2, 3])}}
    older = save_checkpoint(tmp_path / "ckpt_000001.pt", {**state, "step": 6}, kind="test", config={"a": 1})
    path = save_checkpoint(tmp_path / "ckpt_000002.pt", state, kind="test", config={"a": 1})
    original = path.read_bytes()

    def same(a, b) -> bool:
        if isinstance(a, torch.Tensor):
            return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
        if isinstance(a, dict):
            return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
        return type(a) is type(b) and a == b

    outcomes: Counter[str] = Counter()
    for _ in each_flip(path, original):
        outcomes["file " + _outcome(lambda: load_checkpoint(path, kind="test"),
                                    lambda c: same(c.state, state) and c.config == {"a": 1},
                                    CheckpointError, path)] += 1
        ckpt = load_checkpoint(tmp_path, kind="test")  # the directory: newest readable one
        fell_back = ckpt.path == older
        assert fell_back or same(ckpt.state, state)
        if fell_back:
            assert same(ckpt.state, {**state, "step": 6})
            assert f"warning: {path} is damaged; using {older}" in capsys.readouterr().err
        outcomes["directory " + ("fell-back" if fell_back else "identical")] += 1
    figures = record(figures_dir, "checkpoint_flips", {
        "file_bytes": len(original), "masks": len(MASKS), "flips": len(original) * len(MASKS),
        "outcomes": dict(outcomes)})
    bad = {k: n for k, n in figures["outcomes"].items()
           if k.split()[1] not in ("identical", "named-error", "fell-back")}
    assert not bad, bad
    assert figures["outcomes"]["file named-error"] == figures["outcomes"]["directory fell-back"]


# --------------------------------------------------------------------------- kill -9


def _pause(k: int, rng: np.random.Generator, interval: float, writes: Path) -> None:
    """Before kill number ``k``: odd ones wait (up to 5 s) for a write to be under way in ``writes`` (a temp file
    there), even ones wait a random fraction of ``interval`` (the time between two writes)."""
    if k % 2:
        deadline = time.monotonic() + 5
        while not any(writes.glob(".*.tmp")) and time.monotonic() < deadline:
            time.sleep(0.0005)
    else:
        time.sleep(float(rng.uniform(0, interval)))


def _kill(proc) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


COLLECT = ["--env", "tiny:point", "--image-size", "16", "--seed", "5"]


def test_collect_killed_at_random_moments_resumes_to_the_uninterrupted_dataset(tmp_path, figures_dir):
    episodes = 400
    space = make_env("tiny:point", image_size=16).action_space
    reference = collect_episodes("tiny:point", episodes, random_policy(space), out=tmp_path / "ref", seed=5,
                                 image_size=16, progress=False, policy_name="random")
    out, rng = tmp_path / "D", np.random.default_rng(SEED)
    points = []
    for _ in range(KILLS):
        before = len(episode_files(out))
        proc = start(["collect", *COLLECT, "--episodes", episodes, "--append", "--out", out])
        target = before + int(rng.integers(1, 30))
        wait_for(lambda target=target: len(episode_files(out)) >= target, proc)
        _pause(len(points), rng, 0.004, out / "episodes")
        _kill(proc)
        report = validate_dataset(out)
        assert not report.bad, report.bad  # never a corrupt episode file
        points.append({"episodes_before": before, "episodes_after": report.num_episodes,
                       "temp_files_left": len(report.temp_files)})
    assert atcrl(["collect", *COLLECT, "--episodes", str(episodes), "--append", "--out", str(out)]) == 0
    report = validate_dataset(out)
    got, want = open_dataset(out), open_dataset(reference)
    same = report.ok and len(got) == len(want) and all(_same_episode(a, b) for a, b in zip(got, want, strict=True))
    figures = record(figures_dir, "collect_kills", {
        "kills": len(points), "points": points, "killed_mid_write": sum(p["temp_files_left"] > 0 for p in points),
        "final_episodes": report.num_episodes, "final_equals_uninterrupted": same,
        "meta_seed": read_meta(out).extra["collect"]["seed"]})
    assert figures["kills"] >= KILLS and figures["final_equals_uninterrupted"] and figures["final_episodes"] == episodes
    assert not temp_leftovers(out)


def temp_leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*.tmp")]


@pytest.fixture(scope="module")
def point_data(tmp_path_factory) -> Path:
    return point_dataset(tmp_path_factory.mktemp("d") / "point", episodes=4)


def test_pretrain_killed_at_random_moments_resumes_to_the_uninterrupted_encoder(point_data, tmp_path, figures_dir):
    updates = 100
    args = ["pretrain", "--data", str(point_data), "--updates", str(updates), "--batch-size", "16", "--log-every", "2",
            "--ckpt-every", "2", "--val-fraction", "0", "--no-tensorboard", "--seed", "4"]
    assert atcrl([*args, "--out", str(tmp_path / "ref")]) == 0
    out, rng = tmp_path / "run", np.random.default_rng(SEED)
    points = []
    for k in range(KILLS):
        found = list_checkpoints(out / "checkpoints")
        last = found[-1][0] if found else 0
        proc = start([*args, "--out", out, *(["--resume"] if k else [])])
        target = last + 2 * int(rng.integers(1, 4))
        wait_for(lambda target=target: any(s >= target for s, _ in list_checkpoints(out / "checkpoints")), proc)
        _pause(k, rng, 0.06, out / "checkpoints")
        _kill(proc)
        on_disk = list_checkpoints(out / "checkpoints")
        for _, ckpt in on_disk:  # every checkpoint a reader can see is complete
            load_checkpoint(ckpt, kind="pretrain")
        points.append({"resumed_from": last, "latest_after_kill": on_disk[-1][0],
                       "temp_files_left": len(temp_leftovers(out))})
    assert points[-1]["latest_after_kill"] < updates, "the run finished before the last kill; raise --updates"
    assert atcrl([*args, "--out", str(out), "--resume"]) == 0
    steps = [r["step"] for r in read_jsonl(out / "metrics.jsonl")]
    same = all(torch.equal(a, b) for a, b in zip(load_encoder(out).state_dict().values(),
                                                  load_encoder(tmp_path / "ref").state_dict().values(), strict=True))
    figures = record(figures_dir, "pretrain_kills", {
        "kills": len(points), "points": points, "killed_mid_write": sum(p["temp_files_left"] > 0 for p in points),
        "metrics_rows_unique_and_complete": steps == list(range(2, updates + 1, 2)),
        "final_equals_uninterrupted": same})
    assert figures["kills"] >= KILLS and figures["metrics_rows_unique_and_complete"]
    assert figures["final_equals_uninterrupted"]


TRAIN = ["train", "--env", "tiny:point", "--sac.image-size", "32", "--sac.frame-stack", "1", "--sac.warmup-steps",
         "50", "--sac.batch-size", "32", "--sac.agent.hidden", "32", "32", "--sac.agent.latent-dim", "8",
         "--sac.replay-capacity", "2000", "--sac.log-every", "50", "--eval-every", "0", "--eval-episodes", "1",
         "--steps", "1000"]
TRAIN_SESSION = ["--ckpt-every", "50", "--checkpoint-replay", "--no-tensorboard"]
"""Checkpoints every 50 steps (tiny:point's episode length) with the replay: a resume continues bit for bit."""


def test_train_killed_at_random_moments_resumes_to_the_uninterrupted_run(tmp_path, figures_dir):
    assert atcrl([*TRAIN, *TRAIN_SESSION, "--out", str(tmp_path / "ref")]) == 0
    out, rng = tmp_path / "run", np.random.default_rng(SEED)
    points = []
    for k in range(KILLS):
        found = list_checkpoints(out / "checkpoints")
        last = found[-1][0] if found else 0
        proc = start([*(["train", "--resume", out] if k else [*TRAIN, "--out", out]), *TRAIN_SESSION])
        wait_for(lambda last=last: any(s > last for s, _ in list_checkpoints(out / "checkpoints")), proc, timeout=300)
        _pause(k, rng, 0.5, out / "checkpoints")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        err = proc.stderr.read()
        proc.stderr.close()
        on_disk = list_checkpoints(out / "checkpoints")
        for _, ckpt in on_disk:
            load_checkpoint(ckpt, kind="train")
        points.append({"resumed_from": last, "resume_said": f"at step {last} from ckpt_{last:06d}.pt" in err if k
                       else True, "latest_after_kill": on_disk[-1][0], "temp_files_left": len(temp_leftovers(out))})
    assert points[-1]["latest_after_kill"] < 1000, "the run finished before the last kill"
    assert atcrl(["train", "--resume", str(out), *TRAIN_SESSION]) == 0
    got, want = (load_checkpoint(d / "checkpoints", kind="train").state["run"] for d in (out, tmp_path / "ref"))
    same = all(torch.equal(a, b) for a, b in zip(got["agent"]["modules"].values(), want["agent"]["modules"].values(),
                                                  strict=True))
    steps = [r["step"] for r in read_jsonl(out / "metrics.jsonl") if "rl/episodes" in r]
    figures = record(figures_dir, "train_kills", {
        "kills": len(points), "points": points, "killed_mid_write": sum(p["temp_files_left"] > 0 for p in points),
        "resumed_at_the_last_checkpoint": all(p["resume_said"] for p in points),
        "metrics_rows_unique_and_complete": steps == list(range(50, 1001, 50)), "final_equals_uninterrupted": same})
    assert figures["kills"] >= KILLS and figures["resumed_at_the_last_checkpoint"]
    assert figures["metrics_rows_unique_and_complete"] and figures["final_equals_uninterrupted"]


# --------------------------------------------------------------------------- bad inputs


def _zip_entry_field(path: Path, offset: int, value: int) -> None:
    """Set one byte of the first central-directory entry (offset 6: version needed; 10: compression method)."""
    data = bytearray(path.read_bytes())
    data[data.rfind(b"PK\x01\x02", 0, data.rfind(b"PK\x05\x06")) + offset] = value
    path.write_bytes(data)


def _two_episode_dataset(root: Path) -> Path:
    episode, meta = tiny_episode()
    writer = DatasetWriter(root, meta)
    writer.add(episode)
    writer.add(episode)
    writer.close()
    return root


BAD_INPUTS = {
    # name: (setup(tmp) -> argv, expected exit code, words the one error line must hold)
    "train --env ''": (lambda t: ["train", "--env", "", "--out", t / "run"], 2, ["env spec is empty"]),
    "collect --env ''": (lambda t: ["collect", "--env", "", "--episodes", "1", "--out", t / "d"], 2,
                         ["env spec is empty"]),
    "unknown zip version in an episode": (
        lambda t: ["dataset", "info", _damaged(t, 6)], 1, ["ep_000001.npz", "zip file version", "--skip-corrupt"]),
    "unsupported compression method": (
        lambda t: ["dataset", "info", _damaged(t, 10)], 1, ["ep_000001.npz", "compression method", "--skip-corrupt"]),
    "probe with a missing .safetensors": (
        lambda t: ["probe", "--encoder", t / "x.safetensors", "--data", _two_episode_dataset(t / "p")], 2,
        ["x.safetensors is missing"]),
    "export to an existing file": (
        lambda t: ["export", "--run", t / "nope", "--out", _existing(t / "e.json")], 2, ["already exist", "--force"]),
    "pretrain diverges": (
        lambda t: ["pretrain", "--data", _point(t), "--updates", "3", "--batch-size", "16", "--lr", "1e30",
                   "--val-fraction", "0", "--no-tensorboard", "--out", t / "run"], 3, ["diverged", "loss is"]),
}


def _damaged(tmp: Path, offset: int) -> Path:
    root = _two_episode_dataset(tmp / "d")
    _zip_entry_field(dict(episode_files(root))[1], offset, 0xFF if offset == 6 else 0x63)
    return root


def _existing(path: Path) -> Path:
    path.write_text("{}")
    return path


def _point(tmp: Path) -> Path:
    return point_dataset(tmp / "data", episodes=2)


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_gives_one_line_a_nonzero_exit_and_changes_nothing(name, tmp_path, capsys, figures_dir):
    setup, code, words = BAD_INPUTS[name]
    argv = [str(a) for a in setup(tmp_path)]
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert atcrl(argv) == code
    line = one_line_error(capsys.readouterr().err)
    assert all(w in line for w in words), line
    changed = {k for k in set(before) | set(snapshot(tmp_path)) if before.get(k) != snapshot(tmp_path).get(k)}
    # A divergence keeps what the run wrote before it (its config); nothing else may change.
    assert not {c for c in changed if not (name == "pretrain diverges" and c.startswith("run/"))}, changed


def test_skip_corrupt_skips_damaged_zip_internals_and_validate_lists_them(tmp_path, capsys):
    root = _damaged(tmp_path, 6)
    assert atcrl(["dataset", "validate", str(root)]) == 1
    assert "BAD" in capsys.readouterr().out
    assert atcrl(["dataset", "info", str(root), "--skip-corrupt"]) == 0
    assert "1 corrupt file(s): ep_000001.npz" in capsys.readouterr().out
