"""ul-benchmark: the offline UL benchmark. One set of expert demonstrations; an encoder pretrained on it by
each UL objective; each encoder scored by a linear probe of the physics state and by SAC trained on
it frozen (cached latents), against end-to-end RL from scratch.

Pixel control needs discrete actions, so on DMC it is not applicable; the full scale adds the
Atari half of the benchmark (Breakout: a PPO expert's episodes, every objective including pixel
control, frozen PPO). The scales and how they differ from the paper are in NOTES.
"""

from __future__ import annotations

from atcrl.experiments import commands, scales
from atcrl.experiments.commands import PPORun, Pretrain
from atcrl.experiments.offline import FROZEN_PIXEL_REPLAY, Reuse, atari_demonstrations, demonstrations
from atcrl.experiments.spec import Experiment, Scale, Step

NAME = "ul-benchmark"
QUESTION = ("Encoders pretrained on expert demonstrations and then frozen: ATC beats the other UL objectives "
            "(AC, ATS, CPC, ST-DIM, VAE, pixel control, inverse model, random) for RL, and RL on a frozen ATC "
            "encoder is competitive with end-to-end RL.")

DMC_OBJECTIVES = ("atc", "random", "ac", "ats", "cpc", "stdim", "vae", "inverse")
"""In plan order: the flagship and the random baseline first, so a part-way run compares those two."""
ATARI_OBJECTIVES = ("atc", "ac", "ats", "cpc", "stdim", "vae", "pixel-control", "inverse", "random")
OBJECTIVES: dict[Scale, tuple[str, ...]] = {"full": DMC_OBJECTIVES, "cpu-small": DMC_OBJECTIVES,
                                            "gpu": DMC_OBJECTIVES, "tiny": ("atc",)}
VAE_DELTAS: dict[Scale, tuple[int, ...]] = {"full": (0, 1, 3), "cpu-small": (0,), "gpu": (0, 1, 3), "tiny": (0,)}
"""The VAE's Δ (reconstruct o_{t+Δ} from o_t, given the actions between when Δ > 0): the reference's three at
full scale, Δ = 0 alone at the reduced ones. Δ = 0 keeps the variant name "vae"; the others are "vae-dt<Δ>"."""


def variants(objectives: tuple[str, ...], scale: Scale) -> list[tuple[str, str, int | None]]:
    """(variant name, objective, Δt to pass or None) for each encoder the benchmark pretrains."""
    out: list[tuple[str, str, int | None]] = []
    for objective in objectives:
        if objective == "vae":
            # Δ = 0 is the VAE's default: its command stays as it always was.
            out += [("vae", "vae", None) if d == 0 else (f"vae-dt{d}", "vae", d) for d in VAE_DELTAS[scale]]
        else:
            out.append((objective, objective, None))
    return out

ATARI_GAME = "atari:Breakout"
ATARI_EXPERT = PPORun(10_000_000, eval_episodes=10)
ATARI_FROZEN = PPORun(10_000_000, eval_episodes=10)
ATARI_EPISODES = 100
ATARI_MAX_STEPS = 5_000
"""Cut recorded Atari episodes here (27k steps otherwise), so one long episode cannot dominate the data."""

NOTES: dict[Scale, str] = {
    "full": "DMC: a RAD-SAC expert (dmc-rad) on cartpole-swingup for the paper's 47.5k agent steps; 400 of its "
            "episodes sampled from its stochastic policy (50k steps, the size of the paper's expert replay; the "
            "paper used the replay itself, i.e. also the expert's early episodes); 40 more episodes with other "
            "seeds for the probe. Each objective: 1e4 updates, the DMC preset (ATC family batch 256; the others "
            "their paper batches). Frozen SAC (pixel replay with random shift, as the paper) at the paper's length. Pixel "
            "control is not applicable to DMC (continuous actions). Atari: a PPO expert (atari-ppo, 10M steps "
            "instead of the paper's DQN replay after 15M), 100 episodes (cut at 5000 steps), 2e4 updates per "
            "objective (Atari preset), frozen PPO for 10M steps against end-to-end PPO; Atari has no physics "
            "state, so no probe.",
    "cpu-small": "DMC only (Atari: full scale only). A small expert: dmc-rad on cartpole-swingup for 3000 agent steps "
                 "(1000 warm-up, batch 128); 30 of its episodes for pretraining, 12 more for the probe. Each "
                 "objective: 1000 updates instead of 1e4, at half its paper batch (ATC family and inverse model 128, "
                 "CPC 8 sequences of 32, ST-DIM 32, VAE 64): CPC, ST-DIM and VAE make only 1-3 updates/s on this "
                 "CPU. Frozen SAC (latent replay with the sub-pixel shift: 4x faster here than pixel replay) and the "
                 "end-to-end reference: 4000 agent "
                 "steps, 1000 warm-up, batch 128, evaluation every 500 steps with 5 episodes. Fast rendering "
                 "everywhere (data and RL alike). Pixel control is not applicable to DMC (continuous actions).",
    "gpu": scales.gpu_notes(NAME),
    "tiny": "Smoke test on tiny:point: random-policy episodes, ATC only; the numbers mean nothing.",
}


def plan(scale: Scale, seeds: tuple[int, ...], reuse: Reuse) -> Experiment:
    env = scales.TASK[scale]
    task = commands.task_of(env)
    source = demonstrations(env, scales.DEMOS[scale], reuse, fast_render=scales.FAST_RENDER[scale],
                            image_size=scales.IMAGE_SIZE[scale])
    steps: list[Step] = list(source.steps)
    size, rl = scales.PRETRAIN[scale], scales.RL[scale]
    # The references need nothing: early in the plan, they run alongside the expert.
    steps += [commands.train_sac(f"end-to-end-{task}-s{seed}", group="frozen-rl", variant="end-to-end", seed=seed,
                                 env=env, preset="dmc-rad", run=rl) for seed in seeds]
    # Every encoder and its probe before any frozen RL run: an experiment stopped part-way (or one that has
    # run only the first hour) has the whole probe table, and the longer RL runs fill in after.
    pretrain, probe, frozen = [], [], []
    for seed in seeds:
        for name, objective, delta_t in variants(OBJECTIVES[scale], scale):
            pre = f"pretrain-{name}-s{seed}"
            pretrain.append(commands.pretrain(pre, group="pretrain", variant=name, seed=seed, env=env,
                                              data=(source.data,), objective=objective, size=size, delta_t=delta_t,
                                              depends=source.data_deps))
            probe.append(commands.probe(f"probe-{name}-s{seed}", group="probe", variant=name, seed=seed,
                                        env=env, encoder=pre, data=(source.probe_data,), frames=source.probe_frames,
                                        depends=(pre, *source.probe_deps)))
            frozen.append(commands.train_sac(f"frozen-{name}-{task}-s{seed}", group="frozen-rl",
                                             variant=name, seed=seed, env=env, preset="dmc-frozen", run=rl,
                                             encoder=pre, pixel_replay=FROZEN_PIXEL_REPLAY[scale], depends=(pre,)))
    steps += pretrain + probe + frozen
    if scale == "full":
        steps += atari_steps(seeds, scales.PRETRAIN["full"])
    notes = NOTES[scale] + (f" Reused: {source.notes}." if source.notes else "")
    return Experiment(NAME, scale, seeds, QUESTION, notes, tuple(steps))


def atari_steps(seeds: tuple[int, ...], size: Pretrain) -> list[Step]:
    """The Atari half at full scale: PPO expert -> episodes -> every objective -> frozen PPO."""
    game = commands.task_of(ATARI_GAME)
    steps, data = atari_demonstrations(ATARI_GAME, ATARI_EXPERT, episodes=ATARI_EPISODES, max_steps=ATARI_MAX_STEPS)
    atari = Pretrain(size.updates, size.batch_fraction, "atari", size.eval_every, size.extra)
    for seed in seeds:
        for name, objective, delta_t in variants(ATARI_OBJECTIVES, "full"):
            pre = f"atari-pretrain-{name}-s{seed}"
            steps.append(commands.pretrain(pre, group="atari-pretrain", variant=name, seed=seed, env=ATARI_GAME,
                                           data=(data,), objective=objective, size=atari, delta_t=delta_t,
                                           depends=(data,)))
            steps.append(commands.train_ppo(f"atari-frozen-{name}-{game}-s{seed}", group="atari-frozen-rl",
                                            variant=name, seed=seed, env=ATARI_GAME, preset="atari-ppo-frozen",
                                            run=ATARI_FROZEN, encoder=pre, depends=(pre,)))
        steps.append(commands.train_ppo(f"atari-end-to-end-{game}-s{seed}", group="atari-frozen-rl",
                                        variant="end-to-end", seed=seed, env=ATARI_GAME, preset="atari-ppo",
                                        run=ATARI_FROZEN))
    return steps
