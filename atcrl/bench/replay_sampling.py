"""Replay memory and sampling speed at DMC scale → JSON + a markdown table.

Builds a replay of 100k transitions of 3x84x84 uint8 frames (125-step episodes, i.e. 1000 env steps
at action repeat 8, each adding one final-observation slot), then times the samplers.

    python -m atcrl.bench.replay_sampling --out bench/out
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

from atcrl.data.episode import Episode
from atcrl.data.replay import Replay


@dataclass(frozen=True)
class BenchConfig:
    out: Path = Path("bench/out")
    """Directory for replay_sampling.json and replay_sampling.md."""
    transitions: int = 100_000
    """Transitions stored (the paper's DMC replay size)."""
    episode_steps: int = 125
    """Agent steps per episode (1000 env steps / action repeat 8)."""
    frame_stack: int = 3
    """Frames per stacked observation (3 RGB frames → 9x84x84)."""
    action_dim: int = 6
    """Continuous action size (cheetah/walker: 6)."""
    physics_dim: int = 18
    """Physics-state values stored per frame (cheetah: 18)."""
    batch_size: int = 512
    """Rows per sampled batch."""
    batches: int = 50
    """Timed batches per sampler (after 5 untimed warm-up batches)."""
    sequence_length: int = 16
    """Window length for the sequence sampler (batch = batch_size // sequence_length windows)."""
    seed: int = 0
    """Seed for the synthetic frames and the samplers."""


def build(cfg: BenchConfig, rng: np.random.Generator) -> tuple[Replay, float]:
    episodes = -(-cfg.transitions // cfg.episode_steps)
    replay = Replay(
        cfg.transitions + episodes,
        (3, 84, 84),
        frame_stack=cfg.frame_stack,
        action_shape=(cfg.action_dim,),
        physics_dim=cfg.physics_dim,
    )
    # Pixel content does not change gather speed; a small pool keeps frame generation cheap.
    pool = rng.integers(0, 256, (256, 3, 84, 84), dtype=np.uint8)
    T = cfg.episode_steps
    start = time.perf_counter()
    for _ in range(episodes):
        replay.add_episode(
            Episode(
                frames=pool[rng.integers(0, len(pool), T + 1)],
                actions=rng.uniform(-1, 1, (T, cfg.action_dim)).astype(np.float32),
                rewards=rng.uniform(0, 1, T).astype(np.float32),
                terminated=False,
                truncated=True,
                physics=rng.standard_normal((T + 1, cfg.physics_dim)),
            )
        )
    return replay, time.perf_counter() - start


def time_adds(replay: Replay, rng: np.random.Generator, cfg: BenchConfig) -> dict[str, float]:
    """Adding into slots whose pages are already resident (the steady state of a full ring)."""
    T = cfg.episode_steps
    frames = replay.frames[: T + 1].copy()
    ep = Episode(frames, np.zeros((T, cfg.action_dim), np.float32), np.zeros(T, np.float32), False, True)
    start = time.perf_counter()
    for _ in range(20):
        replay.add_episode(ep)
    per_episode = (time.perf_counter() - start) / 20
    action = np.zeros(cfg.action_dim, np.float32)
    replay.add_first(frames[0])
    start = time.perf_counter()
    for t in range(1000):
        replay.add_step(action, 0.0, frames[t % (T + 1)], False, False)
    per_step = (time.perf_counter() - start) / 1000
    return {"add_episode_ms_steady": per_episode * 1e3, "add_step_us": per_step * 1e6}


def timed(fn, batches: int) -> dict[str, float]:
    for _ in range(5):
        fn()
    times = []
    for _ in range(batches):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    ms = np.array(times) * 1e3
    return {"mean_ms": float(ms.mean()), "std_ms": float(ms.std()), "min_ms": float(ms.min())}


def main(cfg: BenchConfig) -> dict:
    rng = np.random.default_rng(cfg.seed)
    replay, build_s = build(cfg, rng)
    frame_bytes = replay.frames[0].nbytes
    result = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "numpy": np.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "load_average_1min": os.getloadavg()[0],
        },
        "slots": len(replay),
        "transitions": replay.num_transitions,
        "nbytes": replay.nbytes,
        "frame_bytes": replay.frames.nbytes,
        "metadata_bytes": replay.nbytes - replay.frames.nbytes,
        "bytes_per_100k_transitions": replay.nbytes * 100_000 / replay.num_transitions,
        "stacked_copy_bytes_for_comparison": len(replay) * cfg.frame_stack * frame_bytes,
        "build_seconds": build_s,
    }
    B, L = cfg.batch_size, cfg.sequence_length
    pairs_out = replay.sample_pairs(B, rng, delta_t=1)
    sac_out = replay.sample_transitions(B, rng)
    random_slots = rng.integers(0, len(replay), (B, cfg.frame_stack))
    samplers = {
        # Lower bound for one stacked gather: numpy fancy indexing of the same number of frames.
        f"bare gather of {B}x{cfg.frame_stack} frames (one stack's worth)": lambda: replay.frames[
            random_slots
        ],
        f"pairs B={B} dt=1": lambda: replay.sample_pairs(B, rng, delta_t=1),
        f"pairs B={B} dt=1 (out buffers)": lambda: replay.sample_pairs(B, rng, delta_t=1, out=pairs_out),
        f"transitions B={B} n=1 (SAC)": lambda: replay.sample_transitions(B, rng),
        f"transitions B={B} n=1 (out buffers)": lambda: replay.sample_transitions(B, rng, out=sac_out),
        f"transitions B={B} n=3": lambda: replay.sample_transitions(B, rng, n_step=3),
        f"sequences {L}x{B // L}": lambda: replay.sample_sequences(B // L, rng, length=L),
    }
    result["sampling"] = {name: timed(fn, cfg.batches) for name, fn in samplers.items()}
    result.update(time_adds(replay, rng, cfg))  # last: these adds overwrite the oldest episodes
    write(cfg.out, result)
    return result


def write(out: Path, result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "replay_sampling.json").write_text(json.dumps(result, indent=2))
    gb = result["bytes_per_100k_transitions"] / 1e9
    lines = [
        "# Replay memory and sampling",
        "",
        (
            f"{result['transitions']:,} transitions in {result['slots']:,} slots of 3x84x84 uint8 "
            f"(frame stack {result['config']['frame_stack']}), {result['machine']['cpu_count']} CPUs, "
            f"torch threads {result['machine']['torch_threads']}, "
            f"1-min load average {result['machine']['load_average_1min']:.1f}."
        ),
        "",
        "| quantity | value |",
        "|---|---|",
        f"| bytes per 100k transitions | {result['bytes_per_100k_transitions']:,.0f} ({gb:.3f} GB) |",
        f"| of which frames | {result['frame_bytes']:,} |",
        f"| of which per-slot metadata (actions, rewards, physics, flags) | {result['metadata_bytes']:,} |",
        f"| one stacked obs stored per slot, for comparison | {result['stacked_copy_bytes_for_comparison']:,} |",
        f"| build time, first touch of fresh pages (add_episode) | {result['build_seconds']:.2f} s |",
        (
            f"| add_episode of {result['config']['episode_steps']} steps into resident slots "
            f"| {result['add_episode_ms_steady']:.2f} ms |"
        ),
        f"| add_step (online loop) | {result['add_step_us']:.1f} µs |",
        "",
        "| sampler | mean ms | std ms | min ms |",
        "|---|---|---|---|",
    ]
    for name, t in result["sampling"].items():
        lines.append(f"| {name} | {t['mean_ms']:.2f} | {t['std_ms']:.2f} | {t['min_ms']:.2f} |")
    (out / "replay_sampling.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    print(json.dumps(main(tyro.cli(BenchConfig)), indent=2))
