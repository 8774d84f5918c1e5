"""`atcrl envs`: which environment families work on this machine, and how fast they step."""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass

from atcrl.envs.meta import env_meta
from atcrl.envs.registry import FAMILIES, make_env, make_vec_env, parse_spec


@dataclass(frozen=True)
class EnvsConfig:
    steps: int = 200
    """Random-action agent steps per env for the speed probe (0: only check that reset + one step work)."""
    families: tuple[str, ...] = ()
    """Families to check (dmc, atari, gym, miniworld, dmlab, tiny); empty means all. Each is probed with its
    example spec."""
    specs: tuple[str, ...] = ()
    """Probe these specs instead of the family examples, e.g. dmc:cheetah-run atari:Breakout."""
    image_size: int | None = None
    """Square observation side in pixels for the probe; None = each family's own frame (84x84; 72x96 for
    miniworld and dmlab)."""
    fast_render: bool = False
    """Probe with fast DMC rendering (no shadows, reflections or multisampling; changes the pixels)."""
    num_envs: int = 1
    """Above 1, probe make_vec_env with this many envs; steps/s then counts agent steps summed over envs."""
    num_threads: int | None = None
    """Threads for Atari vector envs (default: one per core, at most num_envs)."""


@dataclass(frozen=True)
class ProbeResult:
    family: str
    spec: str
    installed: str
    renders: str
    steps_per_s: float | None
    ok: bool


def _step_all(env, vectorised: bool) -> bool:
    """One random step; True when a single env's episode ended (vector envs reset themselves)."""
    _, _, terminated, truncated, _ = env.step(env.action_space.sample())
    return not vectorised and bool(terminated or truncated)


def probe(spec: str, cfg: EnvsConfig) -> ProbeResult:
    """Make the env, reset, step once, then time cfg.steps random agent steps (per env)."""
    family_name, _ = parse_spec(spec)
    family = FAMILIES[family_name]
    if family.module is not None and importlib.util.find_spec(family.module) is None:
        return ProbeResult(family_name, spec, f"no: {family.install}", "-", None, True)
    vectorised = cfg.num_envs > 1
    kwargs = {"seed": 0, "image_size": cfg.image_size, "fast_render": cfg.fast_render}
    try:
        if vectorised:
            env = make_vec_env(spec, cfg.num_envs, num_threads=cfg.num_threads, **kwargs)
            shape = env.single_observation_space.shape
        else:
            env = make_env(spec, **kwargs)
            shape = env.observation_space.shape
        try:
            env.reset()
            _step_all(env, vectorised)
            renders = f"yes {tuple(shape)} x{env_meta(env).action_repeat}"
            rate = None
            if cfg.steps > 0:
                start = time.perf_counter()
                for _ in range(cfg.steps):
                    if _step_all(env, vectorised):
                        env.reset()
                rate = cfg.steps * cfg.num_envs / (time.perf_counter() - start)
        finally:
            env.close()
    except Exception as err:  # noqa: BLE001 -- the report's job is to show the failure, not to stop at it
        return ProbeResult(family_name, spec, "yes", f"no: {type(err).__name__}: {err}"[:100], None, False)
    return ProbeResult(family_name, spec, "yes", renders, rate, True)


def format_table(results: list[ProbeResult]) -> str:
    header = ("family", "spec", "installed", "renders (obs, repeat)", "agent steps/s")
    rows = [header] + [
        (r.family, r.spec, r.installed, r.renders, "-" if r.steps_per_s is None else f"{r.steps_per_s:.0f}")
        for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run_envs(cfg: EnvsConfig) -> int:
    """Print the probe table; exit code 1 if an installed env fails to render, 2 for bad arguments."""
    unknown = [f for f in cfg.families if f not in FAMILIES]
    if unknown:
        print(f"atcrl envs: unknown families {unknown}; choose from {list(FAMILIES)}")
        return 2
    try:
        for spec in cfg.specs:
            parse_spec(spec)
    except ValueError as err:
        print(f"atcrl envs: {err}")
        return 2
    specs = cfg.specs or tuple(FAMILIES[name].example for name in (cfg.families or FAMILIES))
    results = [probe(spec, cfg) for spec in specs]
    print(format_table(results))
    return 0 if all(r.ok for r in results) else 1
