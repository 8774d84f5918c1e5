"""Step builders: one function per `atcrl` subcommand, turning a sized run into a Step.

Experiments describe *what* to compare; the dataclasses here say *how big* each run is at a scale
(None = the paper's value, i.e. the flag is left out and the command's own default applies).
Every builder sets the command's output to the step id, so a step's output is always
``OUT/<id>`` (``OUT/<id>.json`` for probes), and records a run-time estimate (cost.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from atcrl.experiments import cost
from atcrl.experiments.spec import Step

PAPER_WARMUP = 10_000
"""SAC agent steps acting before updates start (paper: 1e4)."""
PAPER_EVAL_EVERY, PAPER_EVAL_EPISODES = 1_000, 10


@dataclass(frozen=True)
class SACRun:
    """Size of a SAC run at one scale; None keeps the paper's value (the flag is not passed)."""

    steps: int | None
    """Total agent steps including the warm-up; None = the task's paper length (paper_steps)."""
    warmup: int | None = None
    batch_size: int | None = None
    eval_every: int | None = None
    eval_episodes: int | None = None
    fast_render: bool = False
    """DMC rendering without shadows/reflections/multisampling (about 4x faster warm-up and evaluation)."""
    ckpt_every: int | None = None
    extra: tuple[str, ...] = ()
    """Further `atcrl train` flags (e.g. the tiny scale's small networks)."""

    def total(self, env: str) -> int:
        return self.steps if self.steps is not None else paper_steps(env)

    def flags(self, env: str) -> list[str]:
        steps = self.total(env)
        out = ["--steps", str(steps)]
        pairs = (("--sac.warmup-steps", self.warmup), ("--sac.batch-size", self.batch_size),
                 ("--eval-every", self.eval_every), ("--eval-episodes", self.eval_episodes),
                 ("--ckpt-every", self.ckpt_every))
        out += [x for flag, value in pairs if value is not None for x in (flag, str(value))]
        if self.ckpt_every is not None:
            out += ["--keep-checkpoints", "1"]
        if self.fast_render:
            out += ["--sac.fast-render", "True"]
        return out + list(self.extra)


@dataclass(frozen=True)
class PPORun:
    """Size of a PPO run at one scale."""

    steps: int
    eval_episodes: int = 0
    """Greedy evaluation episodes at the end (0 = none: the curves are the training episodes' raw
    scores, as in the paper's Atari plots; a greedy Atari policy that never fires can run 27k steps)."""
    extra: tuple[str, ...] = ()
    """Further `atcrl train` flags (e.g. scaled UL/RL start steps)."""

    def flags(self) -> list[str]:
        return ["--steps", str(self.steps), "--eval-episodes", str(self.eval_episodes), *self.extra]


PAPER_BATCH = {"atc": 256, "ac": 256, "ats": 256, "cpc": 16, "stdim": 64, "vae": 128, "inverse": 256,
               "pixel-control": 16}
"""Each objective's paper batch on DMC (pairs; CPC and pixel control: sequences of 32 steps)."""


@dataclass(frozen=True)
class Pretrain:
    """Size of an offline UL pretraining run."""

    updates: int | None = None
    """None = the preset's (DMC 1e4, Atari 2e4)."""
    batch_fraction: float | None = None
    """Every objective's batch as this fraction of its paper batch (PAPER_BATCH); None = the paper's
    (the preset's for the ATC family, the objective's own default for the others)."""
    preset: str = "dmc"
    eval_every: int | None = None
    extra: tuple[str, ...] = ()

    def batch(self, objective: str) -> int | None:
        if self.batch_fraction is None or objective not in PAPER_BATCH:
            return None
        return max(2, round(PAPER_BATCH[objective] * self.batch_fraction))


DECOUPLED_PPO_PRESETS = frozenset({"atari-ppo-atc", "dmlab-ppo-atc"})
"""PPO presets whose conv only UL trains (their runs are costed at the decoupled rate)."""
LAB_FAMILIES = ("miniworld:", "dmlab:")
"""Env families with the DeepMind Lab setting (costed at cost.LAB_PPO_RATE)."""


def task_of(env: str) -> str:
    return env.split(":", 1)[-1]


def action_repeat(env: str) -> int:
    """The env family's default action repeat (DMC per task; 1 elsewhere, where it does not size runs)."""
    if not env.startswith("dmc:"):
        return 1
    from atcrl.envs.dmc import DEFAULT_ACTION_REPEAT, OTHER_ACTION_REPEAT

    return DEFAULT_ACTION_REPEAT.get(task_of(env).split("-")[0], OTHER_ACTION_REPEAT)


def episode_steps(env: str) -> int:
    """Agent steps of one episode (for estimates): 1000 env steps / action repeat for DMC, 50 for the
    tiny envs, and a guess of 2000 for Atari, whose episodes vary with the policy."""
    if env.startswith("dmc:"):
        return 1000 // action_repeat(env)
    return 50 if env.startswith("tiny:") else 2000


def paper_steps(env: str) -> int:
    """Paper run length in agent steps, warm-up included: the reference length where the paper gives
    one, else 500k env steps (the anchor table's longer column) at the task's action repeat."""
    from atcrl.train.sac_loop import REFERENCE_STEPS

    after_warmup = REFERENCE_STEPS.get(task_of(env), 500_000 // action_repeat(env))
    return after_warmup + PAPER_WARMUP


def train_sac(step_id: str, *, group: str, variant: str, seed: int, env: str, preset: str, run: SACRun,
              encoder: str | None = None, pixel_replay: bool = False, depends: tuple[str, ...] = (),
              extra: tuple[str, ...] = ()) -> Step:
    """`atcrl train` with a SAC preset (dmc-atc, dmc-rad, dmc-frozen).

    pixel_replay: a frozen encoder's replay stores pixels (with pixel random shift) instead of latents.
    """
    command = ["train", "--preset", preset, "--env", env, "--seed", str(seed), "--out", step_id, *run.flags(env)]
    if encoder is not None:
        command += ["--encoder", encoder]
    if pixel_replay:
        command += ["--sac.latent-replay", "False"]
    command += list(extra)
    mode = {"dmc-atc": "decoupled", "dmc-rad": "end_to_end"}.get(preset, "frozen-latent")
    if pixel_replay:
        mode = "frozen-pixel"
    size = {"steps": run.total(env), "warmup": run.warmup if run.warmup is not None else PAPER_WARMUP,
            "batch": run.batch_size or (512 if task_of(env).startswith("cheetah") else 256),
            "eval_every": run.eval_every if run.eval_every is not None else PAPER_EVAL_EVERY,
            "eval_episodes": run.eval_episodes if run.eval_episodes is not None else PAPER_EVAL_EPISODES,
            "episode_steps": episode_steps(env)}
    seconds = cost.sac_seconds(mode, fast_render=run.fast_render, **size)
    gpu = cost.sac_gpu_seconds(mode, **size) if env.startswith("dmc:") else None  # measured on DMC only
    return Step(step_id, "train", group, variant, seed, env, tuple(command), depends, seconds, gpu)


def train_ppo(step_id: str, *, group: str, variant: str, seed: int, env: str, preset: str, run: PPORun,
              encoder: str | None = None, depends: tuple[str, ...] = ()) -> Step:
    """`atcrl train` with a PPO preset (atari-ppo-atc, atari-ppo, atari-ppo-frozen, dmlab-ppo, ...)."""
    command = ["train", "--preset", preset, "--env", env, "--seed", str(seed), "--out", step_id, *run.flags()]
    if encoder is not None:
        command += ["--encoder", encoder]
    mode = "decoupled" if preset in DECOUPLED_PPO_PRESETS else ("frozen" if encoder else "end_to_end")
    seconds = cost.ppo_seconds(mode, run.steps, eval_steps=run.eval_episodes * 5_000,
                               lab=env.startswith(LAB_FAMILIES))
    return Step(step_id, "train", group, variant, seed, env, tuple(command), depends, seconds)


def collect(step_id: str, *, group: str, variant: str, seed: int, env: str, episodes: int,
            checkpoint: str | None = None, explore: bool = False, image_size: int = 84, fast_render: bool = False,
            max_steps: int | None = None, depends: tuple[str, ...] = ()) -> Step:
    """`atcrl collect`, always with --append: a re-run keeps the episodes already written."""
    command = ["collect", "--episodes", str(episodes), "--out", step_id, "--seed", str(seed), "--append"]
    command += ["--checkpoint", checkpoint] if checkpoint else ["--env", env, "--policy", "random"]
    if explore:
        command.append("--explore")
    if image_size != 84 and not checkpoint:
        command += ["--image-size", str(image_size)]
    if fast_render:
        command.append("--fast-render")
    if max_steps is not None:
        command += ["--max-steps", str(max_steps)]
    steps = episodes * min(max_steps or episode_steps(env), episode_steps(env))
    seconds = cost.collect_seconds(steps, fast_render)
    return Step(step_id, "collect", group, variant, seed, env, tuple(command), depends, seconds)


def pretrain(step_id: str, *, group: str, variant: str, seed: int, env: str, data: tuple[str, ...],
             objective: str, size: Pretrain, args: tuple[str, ...] = (), delta_t: int | None = None,
             depends: tuple[str, ...] = ()) -> Step:
    """`atcrl pretrain`; ``args`` are --objective-args NAME=VALUE items (the ATC ablation switches)."""
    command = ["pretrain", "--data", *data, "--objective", objective, "--preset", size.preset, "--seed", str(seed),
               "--out", step_id]
    batch = size.batch(objective)
    if size.updates is not None:
        command += ["--updates", str(size.updates)]
    if batch is not None:
        command += ["--batch-size", str(batch)]
    if delta_t is not None:
        command += ["--delta-t", str(delta_t)]
    if args:
        command += ["--objective-args", *args]
    if size.eval_every is not None:
        command += ["--eval-every", str(size.eval_every)]
    command += list(size.extra)
    updates = size.updates or (10_000 if size.preset == "dmc" else 20_000)
    seconds = cost.pretrain_seconds(objective, updates, batch, PAPER_BATCH.get(objective))
    return Step(step_id, "pretrain", group, variant, seed, env, tuple(command), depends, seconds)


def probe(step_id: str, *, group: str, variant: str, seed: int, env: str, encoder: str, data: tuple[str, ...],
          frames: int, depends: tuple[str, ...] = (), arch: str = "dmc") -> Step:
    """`atcrl probe` of an exported encoder (or "random") on datasets with physics; writes OUT/<id>.json."""
    command = ["probe", "--encoder", encoder, "--data", *data, "--out", f"{step_id}.json"]
    if encoder == "random":
        command += ["--arch", arch, "--seed", str(seed)]
    return Step(step_id, "probe", group, variant, seed, env, tuple(command), depends,
                cost.probe_seconds(min(frames, 20_000)))
