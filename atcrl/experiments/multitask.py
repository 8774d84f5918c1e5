"""multitask: one ATC encoder pretrained on episodes of several DMC domains, frozen, then SAC on a task it
has seen and on one it has not; against an encoder pretrained on a single domain, a random encoder
and end-to-end RL. The Atari half: an ATC encoder pretrained on seven of eight games, then PPO on the eighth
with it frozen (and, at full scale, fine-tuned end to end), against end-to-end PPO; at full scale each of the
eight games is held out in turn. The scales and how they differ from the paper are in NOTES.
"""

from __future__ import annotations

from dataclasses import dataclass

from atcrl.experiments import commands, scales, ul_benchmark
from atcrl.experiments.commands import PPORun, Pretrain, SACRun
from atcrl.experiments.offline import FROZEN_PIXEL_REPLAY, Reuse, atari_demonstrations
from atcrl.experiments.spec import Experiment, PlanError, Scale, Step

NAME = "multitask"
QUESTION = ("One encoder pretrained with ATC on several environments and then frozen supports RL on tasks it "
            "was trained on and generalises to new tasks, compared with a single-task encoder, a random "
            "encoder and end-to-end RL.")

PAPER_DOMAINS = ("dmc:ball_in_cup-catch", "dmc:cartpole-swingup", "dmc:cheetah-run", "dmc:walker-walk")


@dataclass(frozen=True)
class Budget:
    domains: tuple[str, ...]
    """Tasks whose episodes pretrain the multi-task encoder."""
    frames_per_domain: int
    """Recorded agent steps per domain (episodes = this / episode length, so every domain weighs alike)."""
    expert: SACRun | None
    """None = record a uniformly random policy instead of an expert per domain."""
    seen: tuple[str, ...]
    """Tasks RL is trained on among the domains; the single-task encoder is pretrained on the first."""
    unseen: tuple[str, ...]
    pretrain: Pretrain
    rl: SACRun
    image_size: int = 84
    fast_render: bool = False
    max_steps: int | None = None
    """Cut recorded episodes here (tiny only)."""
    leave_out: str | None = None
    """A domain left out of a second multi-task encoder (pretrained on the other domains), which is then trained
    frozen on that domain's task: an unseen domain for it, seen by the other encoders (group frozen-unseen)."""


ATARI_PAPER_GAMES = ("atari:Pong", "atari:Qbert", "atari:Seaquest", "atari:SpaceInvaders", "atari:Alien",
                     "atari:Breakout", "atari:Frostbite", "atari:Gravitar")


@dataclass(frozen=True)
class AtariBudget:
    """The Atari half: leave-one-game-out pretraining, then PPO on the game left out."""

    games: tuple[str, ...]
    """Every game recorded; an encoder is pretrained on all of them but its held-out one."""
    holdouts: tuple[str, ...]
    """Games held out in turn: one encoder (pretrained on the other games) and its RL runs per holdout."""
    expert: PPORun | None
    """The PPO expert (atari-ppo) per game whose episodes are recorded; None = a uniformly random policy."""
    episodes: int
    """Episodes recorded per game."""
    max_steps: int
    """Cut recorded episodes here, so no long episode dominates a game's data."""
    pretrain: Pretrain
    rl: PPORun
    """Every PPO run on a held-out game (frozen, fine-tuned and the end-to-end reference alike)."""
    fine_tune: bool
    """Also train PPO end to end starting from the pretrained conv (the paper's fine-tuning)."""


_TINY_PPO = ("--ppo.num-envs", "2", "--ppo.horizon", "16", "--ppo.agent.hidden", "32", "--no-tensorboard")
ATARI_BUDGETS: dict[Scale, AtariBudget] = {
    "full": AtariBudget(ATARI_PAPER_GAMES, ATARI_PAPER_GAMES, ul_benchmark.ATARI_EXPERT, ul_benchmark.ATARI_EPISODES,
                        ul_benchmark.ATARI_MAX_STEPS, Pretrain(updates=50_000, preset="atari"),
                        ul_benchmark.ATARI_FROZEN, fine_tune=True),
    "cpu-small": AtariBudget(ATARI_PAPER_GAMES, ("atari:Breakout",), None, 4, 1_000,
                             Pretrain(updates=2_000, batch_fraction=0.5, preset="atari", eval_every=500),
                             PPORun(200_704, extra=("--ckpt-every", "50000", "--keep-checkpoints", "1")),
                             fine_tune=False),
    "tiny": AtariBudget(("atari:Pong", "atari:Breakout"), ("atari:Breakout",), None, 2, 40,
                        Pretrain(updates=20, batch_fraction=0.125, preset="atari", eval_every=10,
                                 extra=("--no-tensorboard",)),
                        PPORun(128, extra=_TINY_PPO), fine_tune=False),
}
"""Full: the paper's eight games, each held out in turn, 5e4 updates (Atari preset: 32 sequences x 16), frozen and
fine-tuned PPO; the recorded episodes and the RL length as in ul-benchmark's Atari half. cpu-small and tiny: as
the DMC half at those scales, random-policy episodes and one held-out game (Breakout), frozen PPO only."""

BUDGETS: dict[Scale, Budget] = {
    "full": Budget(PAPER_DOMAINS, 50_000, scales.DEMOS["full"].expert,
                   ("dmc:cartpole-swingup", "dmc:ball_in_cup-catch", "dmc:cheetah-run", "dmc:walker-walk"),
                   ("dmc:hopper-hop", "dmc:finger-spin", "dmc:pendulum-swingup"), Pretrain(updates=20_000),
                   scales.RL["full"]),
    "cpu-small": Budget(PAPER_DOMAINS, 4_000, None, ("dmc:cartpole-swingup",), (),
                        Pretrain(updates=2_000, batch_fraction=0.5, eval_every=500), scales.RL["cpu-small"],
                        fast_render=True, leave_out="dmc:cartpole-swingup"),
    "tiny": Budget(("dmc:cartpole-swingup", "dmc:ball_in_cup-catch"), 200, None, ("dmc:cartpole-swingup",),
                   ("dmc:finger-spin",), scales.PRETRAIN["tiny"], scales.RL["tiny"], image_size=32, fast_render=True,
                   max_steps=40),
}

NOTES: dict[Scale, str] = {
    "full": "Paper setting: ATC on ball_in_cup, cartpole, cheetah and walker (2e4 updates, batch 256), frozen SAC on "
            "those four and on the held-out hopper-hop, finger-spin and pendulum-swingup, against end-to-end RAD. "
            "The demonstrations are 50k agent steps per domain sampled from a RAD-SAC expert trained on that domain "
            "for its paper length (the paper used those experts' replays). Added as references: a "
            "single-task ATC encoder (pretrained on cartpole only: on the other tasks it comes from another domain) "
            "and a random encoder. Tasks without a paper run length run 500k env steps. Frozen SAC keeps pixel replay "
            "with random shift, as the paper. Atari: the paper's eight games (Pong, Qbert, Seaquest, SpaceInvaders, "
            "Alien, Breakout, Frostbite, Gravitar), each held out in turn: ATC pretrained for 5e4 updates (Atari "
            "preset, 32 sequences x 16) on the other seven, then PPO on the held-out game with that encoder frozen "
            "and fine-tuned end to end, against end-to-end PPO, 10M agent steps each. The episodes per game are "
            "ul-benchmark's: a PPO expert (10M steps; the paper used a DQN's replay), 100 episodes cut at 5000 steps.",
    "cpu-small": "The four paper domains, but each recorded with a uniformly random policy (4000 agent steps per "
                 "domain, fast rendering): training four experts would take hours. ATC for 2000 updates at batch 128 "
                 "(32 rows per domain). Frozen SAC on cartpole-swingup, 4000 agent steps (1000 warm-up, batch 128: "
                 "early learning), with the multi-task encoder, a single-task (cartpole) encoder, a random encoder "
                 "and end-to-end RAD. The unseen task is a left-out domain: a second multi-task encoder pretrained "
                 "on ball_in_cup, cheetah and walker only, trained frozen on cartpole-swingup, against the same "
                 "references on the same task. The paper holds out hopper-hop, finger-spin and pendulum-swingup "
                 "instead, but no held-out task we tried learns at this budget: end-to-end RAD scored 0 on "
                 "finger-spin in every evaluation over 4000 agent steps (8k env steps), and on reacher-easy its "
                 "eval return fell from 281 (the untrained policy) to 3-7 after 1500 updates. Frozen SAC replays "
                 "cached latents (sub-pixel shift; 4x faster on a CPU than the paper's pixel replay). Atari: the "
                 "eight paper games recorded with a uniformly random policy (4 episodes of at most 1000 steps each), "
                 "one encoder pretrained on seven (Breakout held out) for 2000 updates at batch 128 (8 sequences x "
                 "16), frozen PPO on Breakout against end-to-end PPO, 200,704 agent steps each.",
    "tiny": "Smoke test at 32 px with 40-step episodes (Atari: Pong and Breakout, random policy, Breakout held "
            "out); the numbers mean nothing.",
}


def plan(scale: Scale, seeds: tuple[int, ...], reuse: Reuse) -> Experiment:
    if reuse.given():
        raise PlanError(f"multitask records its own data per domain; {', '.join(reuse.given())} do not apply to it")
    b = BUDGETS[scale]
    steps: list[Step] = []
    datasets: list[str] = []
    for env in b.domains:
        task = commands.task_of(env)
        expert, deps = None, ()
        if b.expert is not None:
            expert = f"expert-{task}"
            deps = (expert,)
            steps.append(commands.train_sac(expert, group="expert", variant="end-to-end", seed=0, env=env,
                                            preset="dmc-rad", run=b.expert))
        episode = min(commands.episode_steps(env), b.max_steps or 10**9)
        data = f"demos-{task}"
        steps.append(commands.collect(data, group="demonstrations", variant="expert" if expert else "random", seed=0,
                                      env=env, episodes=max(2, b.frames_per_domain // episode), checkpoint=expert,
                                      explore=expert is not None, image_size=b.image_size, fast_render=b.fast_render,
                                      max_steps=b.max_steps, depends=deps))
        datasets.append(data)
    # The end-to-end references need no data: early in the plan, they run alongside the collection.
    for seed in seeds:
        for env in (*b.seen, *b.unseen):
            group = "frozen-seen" if env in b.seen else "frozen-unseen"
            steps.append(commands.train_sac(f"end-to-end-{commands.task_of(env)}-s{seed}", group=group,
                                            variant="end-to-end", seed=seed, env=env, preset="dmc-rad", run=b.rl))
    leave = b.leave_out
    left_out = f"multi-task-without-{commands.task_of(leave)}" if leave else ""
    for seed in seeds:
        encoders = {"multi-task": f"pretrain-multi-task-s{seed}", "single-task": f"pretrain-single-task-s{seed}",
                    "random": f"pretrain-random-s{seed}"}
        single = (datasets[b.domains.index(b.seen[0])],)
        sources = {"multi-task": tuple(datasets), "single-task": single, "random": single}
        envs = {"multi-task": b.domains[0], "single-task": b.seen[0], "random": b.seen[0]}
        runs = [(env, variant, "frozen-seen" if env in b.seen else "frozen-unseen")
                for env in (*b.seen, *b.unseen) for variant in encoders]
        if leave:
            runs.append((leave, left_out, "frozen-unseen"))
            others = [env for env in b.domains if env != leave]
            encoders[left_out] = f"pretrain-{left_out}-s{seed}"
            sources[left_out] = tuple(datasets[b.domains.index(env)] for env in others)
            envs[left_out] = others[0]
        for variant, pre in encoders.items():
            steps.append(commands.pretrain(pre, group="pretrain", variant=variant, seed=seed, env=envs[variant],
                                           data=sources[variant], objective="random" if variant == "random" else "atc",
                                           size=b.pretrain, depends=sources[variant]))
        for env, variant, group in runs:
            task = commands.task_of(env)
            steps.append(commands.train_sac(f"frozen-{variant}-{task}-s{seed}", group=group, variant=variant,
                                            seed=seed, env=env, preset="dmc-frozen", run=b.rl, encoder=encoders[variant],
                                            pixel_replay=FROZEN_PIXEL_REPLAY[scale], depends=(encoders[variant],)))
    steps += atari_steps(ATARI_BUDGETS[scale], seeds)
    return Experiment(NAME, scale, seeds, QUESTION, NOTES[scale], tuple(steps))


def atari_steps(b: AtariBudget, seeds: tuple[int, ...]) -> list[Step]:
    """Record every game; per seed and held-out game, pretrain ATC on the other games and run PPO on the held-out
    one with that encoder frozen (and fine-tuned), beside end-to-end PPO from scratch."""
    steps: list[Step] = []
    datasets: dict[str, str] = {}
    for env in b.games:
        recorded, datasets[env] = atari_demonstrations(env, b.expert, episodes=b.episodes, max_steps=b.max_steps)
        steps += recorded
    for seed in seeds:
        for holdout in b.holdouts:
            game = commands.task_of(holdout)
            others = tuple(datasets[env] for env in b.games if env != holdout)
            variant = f"multi-task-without-{game}"
            pre = f"atari-pretrain-{variant}-s{seed}"
            steps.append(commands.pretrain(pre, group="atari-pretrain", variant=variant, seed=seed,
                                           env=next(env for env in b.games if env != holdout), data=others,
                                           objective="atc", size=b.pretrain, depends=others))
            runs = [("frozen", "atari-ppo-frozen")] + ([("fine-tune", "atari-ppo")] if b.fine_tune else [])
            for name, preset in runs:
                steps.append(commands.train_ppo(f"atari-{name}-{variant}-{game}-s{seed}", group="atari-unseen",
                                                variant=name, seed=seed, env=holdout, preset=preset, run=b.rl,
                                                encoder=pre, depends=(pre,)))
            steps.append(commands.train_ppo(f"atari-end-to-end-{game}-s{seed}", group="atari-unseen",
                                            variant="end-to-end", seed=seed, env=holdout, preset="atari-ppo", run=b.rl))
    return steps
