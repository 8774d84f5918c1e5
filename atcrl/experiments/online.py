"""online: RL with UL online. Decoupled ATC (the conv is trained only by ATC, the RL heads see detached
features) against end-to-end RL (the RL loss trains the conv), with SAC on DMControl, PPO on Atari and the
recurrent PPO (ppo_lstm) on the DeepMind Lab stand-in (miniworld:, atcrl.envs.lab3d).

The scales and how they differ from the paper are in NOTES (also written to experiment.json).
"""

from __future__ import annotations

from dataclasses import dataclass

from atcrl.experiments import commands, scales
from atcrl.experiments.commands import PPORun, SACRun
from atcrl.experiments.offline import Reuse
from atcrl.experiments.spec import Experiment, PlanError, Scale, Step

NAME = "online"
QUESTION = ("Online, a conv trained only by ATC (decoupled: no RL gradient reaches it) matches or beats "
            "end-to-end RL in most environments (DMControl with SAC, Atari with PPO, DMLab-shaped 3D "
            "navigation with a recurrent PPO).")

DMC_TASKS = ("dmc:cartpole-swingup", "dmc:ball_in_cup-catch", "dmc:cheetah-run", "dmc:walker-walk",
             "dmc:hopper-hop")
"""The reference's online DMC tasks, each at its reference run length."""
BEYOND_PAPER_TASKS = ("dmc:finger-spin", "dmc:reacher-easy")
"""Beyond the paper (group online-dmc-beyond-paper): tasks with CURL/DrQ anchors but no reference run length;
they run 500k env steps."""
GAMES = ("atari:Breakout", "atari:Pong", "atari:SpaceInvaders", "atari:Qbert")
DEFAULT_SEEDS: dict[Scale, int] = {"full": 3, "cpu-small": 2, "gpu": 4, "tiny": 1}
"""Two seeds fit cpu-small's hour here (the runs are short); the other experiments default to one."""
SAC_VARIANTS = (("decoupled-atc", "dmc-atc"), ("end-to-end", "dmc-rad"))
PPO_VARIANTS = (("decoupled-atc", "atari-ppo-atc"), ("end-to-end", "atari-ppo"))
"""The two variants the reduced scales run: "ATC only" and "RL only"."""
PPO_PAPER_VARIANTS = (*PPO_VARIANTS, ("rl-atc", "atari-ppo-rl-atc"), ("atc-init", "atari-ppo-atc-init"))
"""All four of the reference's Atari variants (full scale): ATC only, RL only, RL + ATC, ATC-init."""
LAB_TASKS = ("miniworld:FourRooms", "miniworld:Maze")
"""The DeepMind Lab stand-ins of the reference's exploration levels (atcrl.envs.lab3d.STAND_INS):
explore_goal_locations_small and _large."""
LAB_VARIANTS = (("end-to-end", "dmlab-ppo"), ("decoupled-atc", "dmlab-ppo-atc"), ("rl-atc", "dmlab-ppo-rl-atc"))
"""The reference's DMLab variants on the stand-in: RL only, ATC only, RL + ATC (recurrent PPO, ppo_lstm)."""
ATC_PRESETS_PPO = frozenset({"atari-ppo-atc", "atari-ppo-rl-atc", "atari-ppo-atc-init", "dmlab-ppo-atc",
                             "dmlab-ppo-rl-atc"})
"""The variants that run online ATC, and so take the scale's UL/RL start steps."""


@dataclass(frozen=True)
class Budget:
    tasks: tuple[str, ...]
    sac: SACRun
    games: tuple[str, ...]
    ppo: PPORun
    ppo_atc_flags: tuple[str, ...] = ()
    """Flags only the ATC variants take (their UL/RL start steps)."""
    ppo_variants: tuple[tuple[str, str], ...] = PPO_VARIANTS
    beyond_paper: tuple[str, ...] = ()
    """DMC tasks run beside the reference's, in their own group (see BEYOND_PAPER_TASKS)."""
    lab_tasks: tuple[str, ...] = ()
    """DeepMind Lab stand-in tasks (group online-dmlab), each run with every LAB_VARIANTS preset."""
    lab: PPORun | None = None
    """Size of the recurrent PPO runs on lab_tasks."""
    lab_atc_flags: tuple[str, ...] = ()
    """Flags only the DMLab ATC variants take (their UL/RL start steps)."""


LAB_CPU_SMALL_STEPS = 16_384
"""Agent steps of a cpu-small DMLab stand-in run: 8 iterations of 16 envs x 128 steps."""

_TINY_PPO = ("--ppo.num-envs", "2", "--ppo.horizon", "16", "--ppo.image-size", "32", "--ppo.encoder", "dmc",
             "--ppo.agent.hidden", "32", "--no-tensorboard")
BUDGETS: dict[Scale, Budget] = {
    "full": Budget(DMC_TASKS, scales.RL["full"], GAMES, PPORun(25_000_000, eval_episodes=10),
                   ppo_variants=PPO_PAPER_VARIANTS, beyond_paper=BEYOND_PAPER_TASKS,
                   lab_tasks=LAB_TASKS, lab=PPORun(25_000_000)),
    "cpu-small": Budget(("dmc:cartpole-swingup",), scales.RL["cpu-small"], ("atari:Breakout",),
                        PPORun(200_704, eval_episodes=0, extra=("--ckpt-every", "50000", "--keep-checkpoints", "1")),
                        ("--ppo.ul-start-steps", "2048", "--ppo.rl-start-steps", "6144"),
                        lab_tasks=LAB_TASKS[:1],
                        lab=PPORun(LAB_CPU_SMALL_STEPS, extra=("--ckpt-every", "8192", "--keep-checkpoints", "1")),
                        lab_atc_flags=("--ppo-lstm.ul-start-steps", "2048", "--ppo-lstm.rl-start-steps", "4096")),
    "gpu": Budget((scales.TASK["gpu"],), scales.RL["gpu"], (), PPORun(0)),
    "tiny": Budget(("tiny:point",), scales.RL["tiny"], ("tiny:catch",), PPORun(128, extra=_TINY_PPO),
                   ("--ppo.ul-start-steps", "32", "--ppo.rl-start-steps", "64", "--ppo.atc.batch-size", "16")),
}

NOTES: dict[Scale, str] = {
    "full": "The paper's settings: the five DMC tasks at their reference lengths, all four Atari variants. Beyond "
            "the paper, in their own group: finger-spin and reacher-easy, which have CURL/DrQ anchors but no "
            "reference length, at 500k env steps. PPO runs evaluate 10 greedy episodes at the end; "
            "their learning curves are the training episodes' raw scores (rl/episode_return), as in the paper. "
            "DMLab: the recurrent PPO's RL only, ATC only and RL + ATC for 25M agent steps on the MiniWorld "
            "stand-ins of explore_goal_locations small (miniworld:FourRooms) and large (miniworld:Maze), at "
            "DMLab's 72x96 frames and action repeat 4 but with MiniWorld's actions, rewards and episodes "
            "(docs/reference-settings.md, D10); no greedy evaluation, the curves are the training episodes' returns.",
    "cpu-small": "Reduced to fit about an hour on a 2-core CPU (--jobs 2). DMC: only cartpole-swingup (the fastest "
                 "to learn, action repeat 8), 4000 agent steps (32k env steps) with a 1000-step warm-up, batch 128 "
                 "instead of 256, evaluation every 500 steps with 5 episodes, fast rendering (no shadows, reflections "
                 "or multisampling; the same for both variants). PPO: atari:Breakout for 200k agent steps (800k "
                 "frames). The paper's UL/RL start steps (5e4 / 1e5 of 25M) are scaled to 2048 / 6144 (one and three "
                 "iterations): ATC keeps a head start without spending a large share of a short run acting at random. "
                 "ATC makes as many updates per PPO update as in the paper (6 per iteration, decaying), so its conv "
                 "sees about 1% of the paper's UL updates: this tests early learning only. No greedy evaluation (a "
                 "barely trained greedy Breakout policy that never fires plays 27k steps per episode); compare the "
                 "training episodes' raw scores (rl/episode_return), which are what the paper plots for Atari. "
                 "DMLab stand-in: miniworld:FourRooms only, 16,384 agent steps (8 iterations of 16 envs x 128) "
                 "instead of 25M; the ATC variants start UL at 2048 and RL at 4096 agent steps (paper: 2e4 / 1e5), "
                 "so RL runs 6 iterations: a smoke-scale comparison of early learning.",
    "gpu": scales.gpu_notes(NAME),
    "tiny": "Smoke test on tiny envs; the numbers mean nothing.",
}


def _ppo_steps(group: str, envs: tuple[str, ...], variants: tuple[tuple[str, str], ...], run: PPORun,
               atc_flags: tuple[str, ...], seed: int) -> list[Step]:
    """One PPO run per env and variant; the ATC variants also get atc_flags."""
    steps = []
    for env in envs:
        for variant, preset in variants:
            sized = PPORun(run.steps, run.eval_episodes, run.extra + atc_flags) if preset in ATC_PRESETS_PPO else run
            steps.append(commands.train_ppo(f"{variant}-{commands.task_of(env)}-s{seed}", group=group,
                                            variant=variant, seed=seed, env=env, preset=preset, run=sized))
    return steps


def plan(scale: Scale, seeds: tuple[int, ...], reuse: Reuse) -> Experiment:
    if reuse.given():
        raise PlanError(f"online trains from scratch; {', '.join(reuse.given())} do not apply to it")
    budget = BUDGETS[scale]
    steps: list[Step] = []
    for seed in seeds:
        for group, tasks in (("online-dmc", budget.tasks), ("online-dmc-beyond-paper", budget.beyond_paper)):
            for env in tasks:
                for variant, preset in SAC_VARIANTS:
                    steps.append(commands.train_sac(f"{variant}-{commands.task_of(env)}-s{seed}", group=group,
                                                    variant=variant, seed=seed, env=env, preset=preset,
                                                    run=budget.sac))
        steps += _ppo_steps("online-atari", budget.games, budget.ppo_variants, budget.ppo, budget.ppo_atc_flags, seed)
        if budget.lab is not None:
            steps += _ppo_steps("online-dmlab", budget.lab_tasks, LAB_VARIANTS, budget.lab, budget.lab_atc_flags, seed)
    return Experiment(NAME, scale, seeds, QUESTION, NOTES[scale], tuple(steps))
