"""The offline pipeline's first half, shared by the experiments that pretrain on demonstrations:
train an expert, record its episodes for pretraining, and record separate episodes for probing.

Probe episodes come from the same expert with other seeds, so the probe scores encoders on
frames none of them was pretrained on. Each piece can be replaced by an existing one (Reuse):
``--expert RUN_DIR`` skips the expert's training, ``--data DIR`` the recording (and, without
``--probe-data``, probes then read --data itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from atcrl.experiments import commands
from atcrl.experiments.commands import PPORun, SACRun
from atcrl.experiments.spec import PlanError, Scale, Step

PROBE_SEED = 1_000
"""Collect seed of the probe episodes (episode k uses (seed, k)): disjoint from the pretraining episodes."""


FROZEN_PIXEL_REPLAY: dict[Scale, bool] = {"full": True, "gpu": True, "cpu-small": False, "tiny": False}
"""Whether frozen DMC SAC in the offline experiments (ul-benchmark, multitask, ablations) keeps pixel replay with
pixel random shift, as the reference does (full and gpu scale); the reduced scales replay cached latents with the sub-pixel
shift instead (about 4x faster on a CPU). Latent replay as a method is the latent-replay experiment's question."""


@dataclass(frozen=True)
class Reuse:
    """Outputs of earlier runs to use instead of making them again (absolute paths)."""

    expert: str | None = None
    """An `atcrl train` run directory acting as the expert."""
    data: str | None = None
    """A dataset of demonstrations to pretrain on."""
    probe_data: str | None = None
    """A dataset with physics state to probe encoders on."""
    encoder: str | None = None
    """An exported encoder (latent-replay)."""

    def given(self) -> list[str]:
        return [f"--{name.replace('_', '-')}" for name in ("expert", "data", "probe_data", "encoder")
                if getattr(self, name) is not None]


@dataclass(frozen=True)
class Demos:
    """Size of the demonstrations at one scale."""

    expert: SACRun | None
    """The expert: end-to-end RAD-SAC (dmc-rad) on the task; None = a uniformly random policy (tiny scale)."""
    episodes: int
    """Episodes recorded for pretraining."""
    probe_episodes: int
    """Further episodes recorded for the linear probe (at least 4: the probe holds a quarter out)."""
    explore: bool = True
    """Record the expert's stochastic policy: closer to the paper's replay of a learning agent
    (varied states) than its deterministic actions, which revisit one trajectory."""


@dataclass(frozen=True)
class Source:
    """Where an experiment's pretraining and probe data come from, and the steps that make them."""

    steps: tuple[Step, ...]
    data: str
    probe_data: str
    data_deps: tuple[str, ...]
    probe_deps: tuple[str, ...]
    probe_frames: int
    notes: str
    """What was reused, for the experiment's notes."""


def demonstrations(env: str, demos: Demos, reuse: Reuse, *, fast_render: bool, image_size: int = 84) -> Source:
    """Expert -> pretraining data -> probe data for ``env`` (each skipped when ``reuse`` gives it)."""
    task = commands.task_of(env)
    steps: list[Step] = []
    notes = []
    expert = reuse.expert
    expert_deps: tuple[str, ...] = ()
    if reuse.data is not None:
        check_dataset(reuse.data, env, fast_render=fast_render, image_size=image_size)
        notes.append(f"pretraining data reused from {reuse.data}")
    if expert is None and reuse.data is None and demos.expert is not None:
        expert = f"expert-{task}"
        expert_deps = (expert,)
        steps.append(commands.train_sac(expert, group="expert", variant="end-to-end", seed=0, env=env,
                                        preset="dmc-rad", run=demos.expert))
    elif expert is not None:
        check_expert(expert, env, fast_render=fast_render, image_size=image_size)
        notes.append(f"expert reused from {expert}")

    def record(step_id: str, episodes: int, seed: int) -> Step:
        return commands.collect(step_id, group="demonstrations", variant="expert" if expert else "random",
                                seed=seed, env=env, episodes=episodes, checkpoint=expert,
                                explore=demos.explore and expert is not None, image_size=image_size,
                                fast_render=fast_render, depends=expert_deps)

    data, data_deps = reuse.data, ()
    if data is None:
        data = f"demos-{task}"
        data_deps = (data,)
        steps.append(record(data, demos.episodes, 0))
    probe_data, probe_deps = reuse.probe_data, ()
    if probe_data is not None:
        check_dataset(probe_data, env, fast_render=fast_render, image_size=image_size)
        notes.append(f"probe data reused from {probe_data}")
    elif expert is None and reuse.data is not None:  # no expert to record probe episodes with
        probe_data, probe_deps = data, data_deps
        notes.append("probes read the pretraining data (no --probe-data): their test frames were seen in pretraining")
    else:
        probe_data = f"probe-data-{task}"
        probe_deps = (probe_data,)
        steps.append(record(probe_data, demos.probe_episodes, PROBE_SEED))
    frames = demos.probe_episodes * (commands.episode_steps(env) + 1)
    return Source(tuple(steps), data, probe_data, data_deps, probe_deps, frames, "; ".join(notes))


def check_dataset(path: str, env: str, *, fast_render: bool, image_size: int) -> None:
    """PlanError unless ``path`` is a dataset of ``env`` rendered as this scale renders."""
    from atcrl.data.dataset import DatasetError, read_meta

    try:
        meta = read_meta(Path(path))
    except (DatasetError, FileNotFoundError, OSError) as e:
        raise PlanError(f"{path} is not an atcrl dataset: {e}") from e
    if meta.tasks and env not in meta.tasks:
        raise PlanError(f"dataset {path} holds {', '.join(meta.tasks)}, but this experiment pretrains on {env}")
    stored = meta.extra.get("collect", {}).get("fast_render")
    if stored is not None and bool(stored) != fast_render:
        raise PlanError(f"dataset {path} was rendered with fast_render={stored}, but this scale renders with "
                        f"fast_render={fast_render}: an encoder must see the pixels the RL runs will see")
    if meta.frame_shape[1:] != (image_size, image_size):
        raise PlanError(f"dataset {path} has {meta.frame_shape[1]}x{meta.frame_shape[2]} frames; this scale uses "
                        f"{image_size}x{image_size}")


def check_expert(run_dir: str, env: str, *, fast_render: bool, image_size: int) -> None:
    """PlanError unless ``run_dir`` is an `atcrl train` run on ``env`` rendered as this scale renders."""
    from atcrl.jsonfile import read_json

    config = Path(run_dir) / "config.json"
    if not config.is_file():
        raise PlanError(f"--expert {run_dir} is not an `atcrl train` run directory (no config.json)")
    loop = read_json(config, PlanError).get("loop", {})
    if loop.get("env") != env:
        raise PlanError(f"--expert {run_dir} was trained on {loop.get('env')}, but this experiment needs {env}")
    if bool(loop.get("fast_render")) != fast_render or loop.get("image_size") != image_size:
        raise PlanError(f"--expert {run_dir} renders {loop.get('image_size')} px with fast_render="
                        f"{loop.get('fast_render')}; this scale needs {image_size} px with fast_render={fast_render}")


def atari_demonstrations(env: str, expert: PPORun | None, *, episodes: int, max_steps: int,
                         image_size: int = 84) -> tuple[list[Step], str]:
    """(steps, dataset id): a PPO expert (atari-ppo) on ``env`` and ``episodes`` of its stochastic policy, each cut at
    ``max_steps``; expert None records a uniformly random policy instead (at ``image_size``)."""
    game = commands.task_of(env)
    steps: list[Step] = []
    checkpoint = None
    if expert is not None:
        checkpoint = f"atari-expert-{game}"
        steps.append(commands.train_ppo(checkpoint, group="atari-expert", variant="end-to-end", seed=0, env=env,
                                        preset="atari-ppo", run=expert))
    data = f"atari-demos-{game}"
    steps.append(commands.collect(data, group="atari-demonstrations", variant="expert" if expert else "random",
                                  seed=0, env=env, episodes=episodes, checkpoint=checkpoint, explore=expert is not None,
                                  image_size=image_size, max_steps=max_steps,
                                  depends=(checkpoint,) if checkpoint else ()))
    return steps, data
