"""Every full-scale command of the plans sets what docs/reference-settings.md says it sets.

Data-driven: each table row names, in its *where* column, the config fields that hold its default
(``atcrl.train.ppo_loop.PPOLoopConfig.num_envs``, ``horizon``; ``atcrl.ul.atc.ATC_PRESETS["atari"].delta_t``).
Every command of ``atcrl experiment online|ul-benchmark --scale full`` is resolved the way the CLI resolves it
(the train plan of preset + flags; the pretraining settings), and every row of the sections that apply to that
command is checked: each named field found in the command's config must hold a value that its *atcrl default*
cell states. A new row (e.g. for DMLab) is checked as soon as it is in a table that applies (SECTIONS) and names
its field. A drift of a plan's flag, a preset or a default away from its table row fails here.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any

import pytest
import tyro
from test_docs import MARKER, _resolve, settings_tables

from atcrl.experiments import commands, plans

EXPERIMENTS = ("online", "ul-benchmark")
NUMBER = re.compile(r"(?<![\w.])[-−]?\d+(?:,\d{3})*(?:\.\d+)?(?:e[-−+]?\d+)?(?![\w.])")
NAME = re.compile(r"`([^`]+)`")


def _family(step) -> str:
    return step.env.split(":", 1)[0]


SECTIONS = {
    "ATC objective": lambda step, algo: step.kind == "pretrain" or algo is not None,
    "Offline pretraining": lambda step, algo: step.kind == "pretrain",
    "Online SAC + ATC for DMC": lambda step, algo: algo == "sac" and _family(step) == "dmc",
    "PPO for Atari": lambda step, algo: algo == "ppo" and _family(step) == "atari",
    "PPO-LSTM for DMLab": lambda step, algo: algo is not None and _family(step) == "dmlab",
}
"""Which full-scale commands each table describes (algo: the train command's agent; None for pretraining)."""


def _numbers(text: str) -> set[float]:
    return {float(n.replace(",", "").replace("−", "-")) for n in NUMBER.findall(text)}


@functools.cache
def _train_plan(command: tuple[str, ...]):
    from atcrl.train.train_plan import TrainConfig, resolve

    return resolve(tyro.cli(TrainConfig, args=list(command[1:])))


def _pretrain_settings(command: tuple[str, ...]):
    from atcrl.train.pretrain import PretrainConfig, resolve_settings

    return resolve_settings(tyro.cli(PretrainConfig, args=list(command[1:])))


def _resolved(step) -> tuple[str | None, Any, str]:
    """(agent or None, the config tree the command runs with, its preset)."""
    flag = lambda name: step.command[step.command.index(name) + 1]
    # The run's identity does not change its settings: one resolution per distinct command.
    identity = {"--seed": "0", "--out": "x", "--encoder": "x"}
    command = tuple(identity.get(step.command[i - 1], a) if i else a for i, a in enumerate(step.command))
    if step.kind == "pretrain":
        return None, _pretrain_settings(command), flag("--preset")
    plan = _train_plan(command)
    return plan.algo, plan.loop, plan.preset


def _nodes(tree: Any) -> list[Any]:
    """Every dataclass instance in ``tree`` (the tree itself first, then its fields, breadth first)."""
    out, todo = [], [tree]
    while todo:
        node = todo.pop(0)
        if dataclasses.is_dataclass(node) and not isinstance(node, type):
            out.append(node)
            todo += [getattr(node, f.name) for f in dataclasses.fields(node)]
    return out


def _owner_type(prefix: str) -> type | None:
    """The dataclass type that the dotted name ``prefix`` names (a class, or an instance of one)."""
    try:
        obj = _resolve(prefix)
    except (ImportError, AttributeError, KeyError):
        return None
    if isinstance(obj, type):
        return obj if dataclasses.is_dataclass(obj) else None
    return type(obj) if dataclasses.is_dataclass(obj) else None


def _fields(where: str) -> list[tuple[type, str, set[str]]]:
    """(dataclass type, field, preset keys the name is under) for the config fields a *where* cell names.
    A bare name after a dotted one (`horizon` after `...PPOLoopConfig.num_envs`) is a field of the same type."""
    out: list[tuple[type, str, set[str]]] = []
    last: tuple[type, set[str]] | None = None
    for name in NAME.findall(where):
        name = name.split(" ")[0]
        if name.startswith("atcrl."):
            prefix, _, attr = name.rpartition(".")
            owner = _owner_type(prefix)
            keys = set(re.findall(r'\["([^"]*)"\]', prefix))
            last = (owner, keys) if owner is not None else None
        elif last is not None and re.fullmatch(r"\w+", name):
            attr = name
        else:
            continue
        if last is not None and attr in {f.name for f in dataclasses.fields(last[0])}:
            out.append((last[0], attr, last[1]))
    return out


def _tasks(text: str, known: set[str]) -> set[str]:
    return {t for t in known if re.search(rf"(?<![\w-]){re.escape(t)}(?![\w-])", text)}


def _full_steps():
    return [(name, step) for name in EXPERIMENTS for step in plans.build(name, "full", 1).steps
            if step.kind in ("train", "pretrain")]


def _check(row: dict[str, str], section_tasks: set[str], algo, tree, preset: str, task: str) -> list[str]:
    """Mismatches of one row against one command's config (empty: it agrees, or names nothing found there)."""
    setting = row["setting"]
    named = _tasks(setting, section_tasks)
    if named and task not in named:
        return []
    if "other" in setting and task in section_tasks:
        return []
    default = MARKER.sub("", row["atcrl default"]).strip()
    if default.lower().startswith("the same"):
        default = f"{row['reference']}; {default}"
    allowed = _numbers(default) | _numbers(NAME.sub("", row["where"]))
    if re.search(r"\b(none|off|no)\b", default.lower()):
        allowed.add(0.0)  # "none" / "off" is a zero (no clipping, no decay)
    nodes = _nodes(tree)
    bad = []
    for owner, attr, keys in _fields(row["where"]):
        if keys and preset not in keys and keys & _preset_names():
            continue  # the row describes another preset's value
        for node in (n for n in nodes if isinstance(n, owner)):
            value = getattr(node, attr)
            if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                continue
            ok = (value.lower() in default.lower()) if isinstance(value, str) else float(value) in allowed
            if not ok:
                bad.append(f"{setting!r}: {owner.__name__}.{attr} = {value!r}, the table says {default!r}")
    return bad


@functools.cache
def _preset_names() -> frozenset[str]:
    from atcrl.presets import PRETRAIN_PRESETS, RL_PRESETS
    from atcrl.ul.atc import ATC_PRESETS

    return frozenset(PRETRAIN_PRESETS) | frozenset(RL_PRESETS) | frozenset(ATC_PRESETS)


def test_full_scale_commands_match_the_reference_tables():
    tables = settings_tables()
    steps = _full_steps()
    known_tasks = {commands.task_of(step.env) for _, step in steps}
    checked: dict[str, int] = {section: 0 for section in SECTIONS if section in tables}
    mismatches = []
    for experiment, step in steps:
        try:
            algo, tree, preset = _resolved(step)
        except ImportError as e:  # an env family not installed here: its commands cannot be resolved
            pytest.skip(f"{step.env}: {e}")
        for section, applies in SECTIONS.items():
            if section not in tables or not applies(step, algo):
                continue
            rows = tables[section]
            section_tasks = set().union(*(_tasks(r["setting"], known_tasks) for r in rows))
            for row in rows:
                found = _check(row, section_tasks, algo, tree, preset, commands.task_of(step.env))
                mismatches += [f"{experiment} {step.id}: {m}" for m in found]
                checked[section] += bool(_fields(row["where"]))
    assert not mismatches, "full-scale commands differ from docs/reference-settings.md:\n" + "\n".join(mismatches)
    empty = [s for s, n in checked.items() if n == 0 and s != "PPO-LSTM for DMLab"]
    assert not empty, f"no row of {empty} named a config field of any full-scale command: the check is broken"


def test_a_drifted_setting_fails_the_check():
    """The check itself: a command whose PPO epochs differ from the table's 4, or whose online ATC samples pairs,
    is reported."""
    tables = settings_tables()
    step = next(s for _, s in _full_steps() if s.kind == "train" and s.env.startswith("atari:"))
    algo, loop, preset = _resolved(step)
    drifted = dataclasses.replace(loop, ppo=dataclasses.replace(loop.ppo, epochs=3))
    row = next(r for r in tables["PPO for Atari"] if r["setting"].startswith("epochs"))
    assert _check(row, set(), algo, loop, preset, "Breakout") == []
    assert _check(row, set(), algo, drifted, preset, "Breakout")
    # A string setting too: online ATC back on independent pairs is not what the table says.
    pairs = dataclasses.replace(loop, atc=dataclasses.replace(loop.atc, sampling="pairs"))
    row = next(r for r in tables["PPO for Atari"] if r["setting"] == "online ATC batch")
    assert _check(row, set(), algo, loop, preset, "Breakout") == []
    assert any("sampling = 'pairs'" in m for m in _check(row, set(), algo, pairs, preset, "Breakout"))
