"""ablations: which parts of ATC matter. Every variant is pretrained on the same demonstrations with the
same seed and budget; each is scored by its held-out contrastive accuracy (the pretraining run's
val/accuracy), a linear probe of the physics state, and (for some) frozen SAC.

Held-out accuracy compares only variants that solve the same task: Δt 0 and AC match a frame to
a shifted copy of itself, an easier problem than matching the next frame. The scales and how they
differ from the paper are in NOTES.
"""

from __future__ import annotations

from atcrl.experiments import commands, scales
from atcrl.experiments.offline import FROZEN_PIXEL_REPLAY, Reuse, demonstrations
from atcrl.experiments.spec import Experiment, Scale, Step

NAME = "ablations"
QUESTION = ("Which parts of ATC matter for the representation: random-shift augmentation, the momentum encoder, "
            "the residual predictor, the bilinear W, the temporal offset Δt (0, 1, 3), and temporal contrast "
            "itself (ATC vs AC).")

VARIANTS: dict[str, tuple[str, int | None, tuple[str, ...]]] = {
    # variant: (objective, --delta-t, --objective-args)
    "atc": ("atc", None, ()),
    "no-augmentation": ("atc", None, ("augment=false",)),
    "no-momentum": ("atc", None, ("target_tau=1.0",)),
    "no-predictor": ("atc", None, ("use_predictor=false",)),
    "no-W": ("atc", None, ("use_W=false",)),
    "dt-0": ("atc", 0, ()),
    "dt-3": ("atc", 3, ()),
    "ac": ("ac", None, ()),
}
"""The full ATC is Δt 1 (the DMC preset), so "atc" is also the Δt-1 point."""

SCALE_VARIANTS: dict[Scale, tuple[str, ...]] = {"full": tuple(VARIANTS), "cpu-small": tuple(VARIANTS),
                                                "tiny": ("atc", "no-momentum")}
FROZEN_RL: dict[Scale, tuple[str, ...]] = {"full": tuple(VARIANTS), "cpu-small": ("atc", "no-augmentation"),
                                           "tiny": ("atc",)}
"""Variants also scored by frozen SAC (cpu-small: augmentation, the paper's largest effect on DMC)."""

NOTES: dict[Scale, str] = {
    "full": "Demonstrations as in ul-benchmark (400 episodes of a RAD-SAC expert on cartpole-swingup); every variant "
            "1e4 updates at batch 256 (DMC preset); probe on 40 separate episodes; frozen SAC (pixel replay with "
            "random shift) for every variant at the paper's length. A random-encoder probe gives the floor.",
    "cpu-small": "Demonstrations as in ul-benchmark at cpu-small (small expert, 30 episodes; pass --data/--expert to "
                 "reuse them); every variant 1000 updates at batch 128 (chance accuracy 1/128); probe on 12 "
                 "separate episodes; frozen SAC (latent replay, 4000 agent steps, batch 128, fast rendering) for the full ATC and "
                 "the no-augmentation variant only. A random-encoder probe gives the floor.",
    "tiny": "Smoke test on tiny:point with two variants; the numbers mean nothing.",
}


def plan(scale: Scale, seeds: tuple[int, ...], reuse: Reuse) -> Experiment:
    env = scales.TASK[scale]
    task = commands.task_of(env)
    source = demonstrations(env, scales.DEMOS[scale], reuse, fast_render=scales.FAST_RENDER[scale],
                            image_size=scales.IMAGE_SIZE[scale])
    steps: list[Step] = list(source.steps)
    size, rl = scales.PRETRAIN[scale], scales.RL[scale]
    for seed in seeds:
        steps.append(commands.probe(f"probe-random-s{seed}", group="probe", variant="random", seed=seed, env=env,
                                    encoder="random", data=(source.probe_data,), frames=source.probe_frames,
                                    depends=source.probe_deps))
        for variant in SCALE_VARIANTS[scale]:
            objective, delta_t, args = VARIANTS[variant]
            pre = f"pretrain-{variant}-s{seed}"
            steps.append(commands.pretrain(pre, group="pretrain", variant=variant, seed=seed, env=env,
                                           data=(source.data,), objective=objective, size=size, args=args,
                                           delta_t=delta_t, depends=source.data_deps))
            steps.append(commands.probe(f"probe-{variant}-s{seed}", group="probe", variant=variant, seed=seed, env=env,
                                        encoder=pre, data=(source.probe_data,), frames=source.probe_frames,
                                        depends=(pre, *source.probe_deps)))
            if variant in FROZEN_RL[scale]:
                steps.append(commands.train_sac(f"frozen-{variant}-{task}-s{seed}", group="frozen-rl", variant=variant,
                                                seed=seed, env=env, preset="dmc-frozen", run=rl, encoder=pre,
                                                pixel_replay=FROZEN_PIXEL_REPLAY[scale], depends=(pre,)))
    notes = NOTES[scale] + (f" Reused: {source.notes}." if source.notes else "")
    return Experiment(NAME, scale, seeds, QUESTION, notes, tuple(steps))
