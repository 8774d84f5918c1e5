"""OUT/experiment.json: the plan, the machine, and the state of every step (the package doc has the contract).

The file is rewritten atomically after every change of a step's state, so a reader (`atcrl report`,
or a re-run resuming the experiment) sees either the previous or the new version, never a torn one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from atcrl.atomic import atomic_write
from atcrl.experiments.provenance import git_state, machine
from atcrl.experiments.spec import Experiment, PlanError, Step

RECORD = "experiment.json"
STEP_STATE = ("status", "returncode", "wall_time_s")
KEPT = (*STEP_STATE, "ran_command", "log_tail", "started", "finished", "attempts", "git_commit", "git_dirty",
        "machine", "inputs", "output_hash")
"""Step keys a re-run keeps from the record it resumes (the provenance of the work already on disk)."""


def step_record(step: Step) -> dict[str, Any]:
    return {"id": step.id, "kind": step.kind, "group": step.group, "variant": step.variant, "seed": step.seed,
            "env": step.env, "depends": list(step.depends), "command": list(step.command), "out": step.out,
            "status": "pending", "returncode": None, "wall_time_s": None,
            "log": step.log, "estimate_s": round(step.estimate_s, 1)}


def new_record(exp: Experiment, command: list[str]) -> dict[str, Any]:
    return {"name": exp.name, "scale": exp.scale, "seeds": list(exp.seeds), "question": exp.question,
            "notes": exp.notes, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(),
            **git_state(), "command": command, "steps": [step_record(s) for s in exp.steps]}


def load(out: Path) -> dict[str, Any] | None:
    path = out / RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PlanError(f"{path} is corrupt ({e}); move it away to start the experiment afresh") from e
    if not isinstance(record, dict) or not isinstance(record.get("steps"), list):
        raise PlanError(f"{path} is not an experiment record (no steps list)")
    return record


def merge(old: dict[str, Any] | None, exp: Experiment, command: list[str]) -> dict[str, Any]:
    """The record for running ``exp`` in a directory that holds ``old`` (None: a new directory).

    Steps keep their recorded state when their command is unchanged. The plan may grow (more seeds)
    but not change: a different experiment, scale or command for an existing step is an error, since
    the outputs on disk were made by the old commands.
    """
    record = new_record(exp, command)
    if old is None:
        return record
    where = "this --out"
    if (old.get("name"), old.get("scale")) != (exp.name, exp.scale):
        raise PlanError(f"{where} holds experiment {old.get('name')!r} at scale {old.get('scale')!r}, not "
                        f"{exp.name!r} at {exp.scale!r}; choose another --out")
    previous = {s["id"]: s for s in old["steps"]}
    if dropped := sorted(set(previous) - {s.id for s in exp.steps}):
        raise PlanError(f"{where} holds steps this plan does not have ({', '.join(dropped[:5])}"
                        f"{', ...' if len(dropped) > 5 else ''}): it was made with other options (more seeds, or "
                        f"other --expert/--data). Re-run with those options, or choose another --out")
    for s in record["steps"]:
        was = previous.get(s["id"])
        if was is None:
            continue
        if was.get("command") != s["command"]:
            raise PlanError(f"step {s['id']} was run as `atcrl {' '.join(was.get('command', []))}` but this plan runs "
                            f"`atcrl {' '.join(s['command'])}`; re-run with the original options or choose another --out")
        for key in KEPT:
            if key in was:
                s[key] = was[key]
    # The top-level machine and git state are those of the invocation that created the record; each step
    # carries its own (the commit and machine of the attempts that made its output).
    for key in ("created", "machine", "git_commit", "git_dirty"):
        if key in old:
            record[key] = old[key]
    return record


def write(out: Path, record: dict[str, Any]) -> None:
    data = (json.dumps(record, indent=2) + "\n").encode()
    atomic_write(out / RECORD, lambda f: f.write(data))
