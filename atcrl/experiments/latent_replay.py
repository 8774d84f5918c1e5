"""latent-replay: with a frozen encoder the replay can store the conv's output instead of pixels. SAC on one
frozen ATC encoder, three ways: latents with the sub-pixel random shift (the paper's method), pixels
with the pixel random shift (the encoder re-run on every sampled batch), and latents without any
shift. Compared: return, agent steps per second (metrics perf/steps_per_s) and replay memory.

The scales and how they differ from the paper are in NOTES.
"""

from __future__ import annotations

from atcrl.experiments import commands, scales
from atcrl.experiments.offline import Reuse, demonstrations
from atcrl.experiments.spec import Experiment, PlanError, Scale, Step

NAME = "latent-replay"
QUESTION = ("RL on a frozen encoder can replay cached latent images instead of pixels, with the sub-pixel random "
            "shift standing in for pixel augmentation: far less memory and compute for equal returns; without "
            "any shift, returns suffer.")

VARIANTS: dict[str, tuple[bool, tuple[str, ...]]] = {
    # variant: (pixel replay, extra `atcrl train` flags)
    "latent-subpixel-shift": (False, ()),
    "pixel-random-shift": (True, ()),
    "latent-no-shift": (False, ("--sac.agent.latent-shift", "0")),
    "latent-uint8-subpixel-shift": (False, ("--sac.latent-dtype", "uint8")),
}

NOTES: dict[Scale, str] = {
    "full": "Encoder: ATC pretrained on the ul-benchmark demonstrations (400 expert episodes, 1e4 updates); frozen "
            "SAC on cartpole-swingup at the paper's length, replay 1e5. Replay memory per stored observation: "
            "pixels 3x84x84 uint8 = 21,168 B (frames are stacked at sample time); latents 32x7x7 float16 = 3,136 B, uint8 = 1,568 B.",
    "cpu-small": "Encoder: ATC for 1000 updates at batch 128 on 30 episodes of a small cartpole-swingup expert (as in "
                 "ul-benchmark at cpu-small; pass --encoder to reuse one). Frozen SAC 4000 agent steps (1000 warm-up, "
                 "batch 128, fast rendering). The pixel-replay run re-encodes every batch and "
                 "is several times slower than the latent ones. Replay memory per stored observation: pixels "
                 "3x84x84 uint8 = 21,168 B; latents 32x7x7 float16 = 3,136 B, uint8 = 1,568 B.",
    "tiny": "Smoke test on tiny:point; the numbers mean nothing.",
}


def plan(scale: Scale, seeds: tuple[int, ...], reuse: Reuse) -> Experiment:
    env = scales.TASK[scale]
    task = commands.task_of(env)
    if reuse.probe_data is not None:
        raise PlanError("latent-replay probes nothing; --probe-data does not apply to it")
    steps: list[Step] = []
    notes = NOTES[scale]
    if reuse.encoder is not None:
        if reuse.expert is not None or reuse.data is not None:
            raise PlanError("give either --encoder or --expert/--data: with an encoder nothing is pretrained")
        check_encoder(reuse.encoder, scales.IMAGE_SIZE[scale])
        encoders = {seed: reuse.encoder for seed in seeds}
        deps: dict[int, tuple[str, ...]] = {seed: () for seed in seeds}
        notes += f" Reused: the encoder {reuse.encoder} for every seed."
    else:
        source = demonstrations(env, scales.DEMOS[scale], reuse, fast_render=scales.FAST_RENDER[scale],
                                image_size=scales.IMAGE_SIZE[scale])
        steps += [s for s in source.steps if s.id in source.data_deps or s.group == "expert"]
        encoders = {seed: f"pretrain-atc-s{seed}" for seed in seeds}
        deps = {seed: (encoders[seed],) for seed in seeds}
        for seed in seeds:
            steps.append(commands.pretrain(encoders[seed], group="pretrain", variant="atc", seed=seed, env=env,
                                           data=(source.data,), objective="atc", size=scales.PRETRAIN[scale],
                                           depends=source.data_deps))
        if source.notes:
            notes += f" Reused: {source.notes}."
    for seed in seeds:
        for variant, (pixels, extra) in VARIANTS.items():
            steps.append(commands.train_sac(f"{variant}-{task}-s{seed}", group="frozen-rl", variant=variant, seed=seed,
                                            env=env, preset="dmc-frozen", run=scales.RL[scale],
                                            encoder=encoders[seed], pixel_replay=pixels, depends=deps[seed],
                                            extra=extra))
    return Experiment(NAME, scale, seeds, QUESTION, notes, tuple(steps))


def check_encoder(path: str, image_size: int) -> None:
    """PlanError unless ``path`` is an exported encoder reading 3 stacked RGB frames of this scale's size."""
    from atcrl.checkpoint import CheckpointError
    from atcrl.encoder_io import encoder_info

    try:
        shape = tuple(encoder_info(path)["in_shape"])
    except (CheckpointError, ValueError, OSError, KeyError) as e:
        raise PlanError(f"--encoder {path} is not an exported encoder: {e}") from e
    if shape != (9, image_size, image_size):
        raise PlanError(f"--encoder {path} reads observations of shape {shape}; this scale's runs give "
                        f"(9, {image_size}, {image_size})")
