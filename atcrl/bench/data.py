"""Data-side benchmarks: replay bytes and sampling time (pixels vs float16 and uint8 frozen latents), and env steps/s.

The pixel replay is built and timed with atcrl.bench.replay_sampling (the replay's own benchmark),
environments are probed with atcrl.envs.report (the `atcrl envs` command), so every figure here
is the same measurement those tools report.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from atcrl.bench import replay_sampling as rs
from atcrl.data.episode import Episode
from atcrl.data.replay import Replay

LATENT_SHAPE = (32, 7, 7)
"""The DMC conv's output on 84 x 84 frames, what a frozen-encoder replay stores per observation."""
ACTION_DIM = 6
"""Continuous action size of the synthetic episodes (cheetah / walker)."""


def latent_replay(transitions: int, episode_steps: int = 125, seed: int = 0,
                  dtype: str = "float16") -> Replay:
    """A frozen-encoder replay: one latent per stacked observation (no frame stacking), stored as ``dtype``
    ("float16", or "uint8" as with SACLoopConfig.latent_dtype="uint8")."""
    if dtype not in ("float16", "uint8"):
        raise ValueError(f"latent dtype must be 'float16' or 'uint8', got {dtype!r}")
    rng = np.random.default_rng(seed)
    episodes = math.ceil(transitions / episode_steps)
    replay = Replay(transitions + episodes, LATENT_SHAPE, frame_stack=1, action_shape=(ACTION_DIM,),
                    frame_dtype=np.dtype(dtype))
    if dtype == "uint8":
        pool = rng.integers(0, 256, (64, *LATENT_SHAPE), dtype=np.uint8)
    else:
        pool = rng.random((64, *LATENT_SHAPE), dtype=np.float32).astype(np.float16)
    T = episode_steps
    for _ in range(episodes):
        replay.add_episode(Episode(frames=pool[rng.integers(0, len(pool), T + 1)],
                                   actions=rng.uniform(-1, 1, (T, ACTION_DIM)).astype(np.float32),
                                   rewards=np.zeros(T, np.float32), terminated=False, truncated=True))
    return replay


def replay_memory(transitions: int, batch_size: int = 512, batches: int = 20) -> dict[str, Any]:
    """Bytes per 100k transitions, their ratio to the pixels', and SAC/ATC sampling time for the pixel
    replay and the latent replays ("latents": float16, "latents_uint8": uint8)."""
    rng = np.random.default_rng(0)
    cfg = rs.BenchConfig(transitions=transitions, batch_size=batch_size, batches=batches)
    pixels, _ = rs.build(cfg, rng)
    out: dict[str, Any] = {"transitions": transitions, "batch_size": batch_size}
    replays = (("pixels", pixels), ("latents", latent_replay(transitions)),
               ("latents_uint8", latent_replay(transitions, dtype="uint8")))
    for name, replay in replays:
        out[name] = {
            "frame_shape": list(replay.frame_shape), "frame_dtype": str(replay.frames.dtype),
            "frame_stack": replay.frame_stack,
            "bytes_per_100k": replay.nbytes * 100_000 / replay.num_transitions,
            "transitions_ms": rs.timed(lambda r=replay: r.sample_transitions(batch_size, rng), batches)["min_ms"],
            "pairs_ms": rs.timed(lambda r=replay: r.sample_pairs(batch_size, rng, delta_t=1), batches)["min_ms"],
        }
        out[name]["pixels_to_this_bytes"] = out["pixels"]["bytes_per_100k"] / out[name]["bytes_per_100k"]
    out["pixel_to_latent_bytes"] = out["latents"]["pixels_to_this_bytes"]
    out["pixel_to_latent_uint8_bytes"] = out["latents_uint8"]["pixels_to_this_bytes"]
    return out


def env_rates(specs: list[tuple[str, bool, int]], steps: int) -> list[dict[str, Any]]:
    """Agent and env steps/s for (spec, fast_render, num_envs) via the `atcrl envs` probe."""
    from atcrl.envs.report import EnvsConfig, probe

    rows = []
    for spec, fast_render, num_envs in specs:
        result = probe(spec, EnvsConfig(steps=steps, fast_render=fast_render, num_envs=num_envs))
        repeat = int(result.renders.rsplit("x", 1)[-1]) if result.ok and result.renders.startswith("yes") else None
        rows.append({"spec": spec, "fast_render": fast_render, "num_envs": num_envs, "ok": result.ok,
                     "renders": result.renders, "agent_steps_per_s": result.steps_per_s,
                     "env_steps_per_s": None if result.steps_per_s is None or repeat is None
                     else result.steps_per_s * repeat})
    return rows
