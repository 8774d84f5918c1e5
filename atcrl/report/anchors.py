"""The paper's reference numbers for DMC, as data, so reports can put them beside our runs.

Source: the CURL and DrQ papers' DMControl tables (also in docs/reference-settings.md, "Anchor numbers"):
final returns (mean ± std over seeds) after 100k and 500k environment steps (agent steps × action repeat);
the 500k numbers are quoted without a std.
The ATC paper itself reports learning curves; these two baselines are the published tables it is
usually read against. Reports show them only beside runs at the same env-step budget (``at_budget``),
labelled as quoted figures.
"""

from __future__ import annotations

from dataclasses import dataclass

SOURCE = ("quoted from the CURL (Laskin et al., 2020) and DrQ (Kostrikov et al., 2020) DMControl tables at 100k / "
          "500k env steps (mean ± std over their seeds)")
TASKS = ("finger-spin", "cartpole-swingup", "reacher-easy", "cheetah-run", "walker-walk", "ball_in_cup-catch")


@dataclass(frozen=True)
class Anchor:
    """One published final return."""

    method: str
    task: str
    env_steps: int
    mean: float
    std: float | None
    """None where the source gives no spread."""


def _table(method: str, env_steps: int, values: tuple) -> list[Anchor]:
    rows = []
    for task, v in zip(TASKS, values, strict=True):
        mean, std = v if isinstance(v, tuple) else (v, None)
        rows.append(Anchor(method, task, env_steps, float(mean), None if std is None else float(std)))
    return rows


ANCHORS: tuple[Anchor, ...] = (
    *_table("CURL", 100_000, ((767, 56), (582, 146), (538, 233), (299, 48), (403, 24), (769, 43))),
    *_table("DrQ", 100_000, ((901, 104), (759, 92), (601, 213), (344, 67), (612, 164), (913, 53))),
    *_table("CURL", 500_000, (926, 841, 929, 518, 902, 959)),
    *_table("DrQ", 500_000, (938, 868, 942, 660, 921, 963)),
)
COLUMNS: tuple[tuple[str, int], ...] = (("CURL", 100_000), ("DrQ", 100_000), ("CURL", 500_000), ("DrQ", 500_000))
"""(method, env steps) of the anchor columns, in the order reports show them."""


def task_of(env: str) -> str | None:
    """The anchor task name of an env spec ("dmc:cartpole-swingup" -> "cartpole-swingup"), or None."""
    family, _, name = env.partition(":")
    if not name:
        family, name = "dmc", family
    return name if family == "dmc" and name in TASKS else None


def anchors_for(env: str) -> dict[tuple[str, int], Anchor]:
    """The anchors of an env keyed by (method, env steps); empty for envs the paper gives no number for."""
    task = task_of(env)
    return {(a.method, a.env_steps): a for a in ANCHORS if a.task == task}


def at_budget(env: str, env_steps: int) -> list[Anchor]:
    """The anchors of an env at exactly this env-step budget (the only ones a report may set beside a run)."""
    return [a for a in anchors_for(env).values() if a.env_steps == env_steps]


def format_anchor(a: Anchor | None) -> str:
    if a is None:
        return "—"
    return f"{a.mean:.0f} ± {a.std:.0f}" if a.std is not None else f"{a.mean:.0f}"
