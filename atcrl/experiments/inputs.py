"""The inputs a step reads, and the refusal to run on inputs that changed since they were made or read.

Every step's output gets a content hash when the step finishes (``output_hash`` in its record), and
every step records the hash of each input when it starts (``inputs``: path -> hash). Before a run,
each input of a step still to run is hashed again and compared with

- the hash its producing step recorded: a step of this experiment, or, for an external input,
  the step of the experiment whose directory holds it (found through that directory's
  experiment.json), and
- the hashes earlier steps of this experiment recorded when they read the same path,

so an experiment never mixes outputs computed from two versions of its data (e.g. another
experiment's demonstrations replaced after half of this one ran).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from atcrl.experiments.provenance import content_hash
from atcrl.experiments.spec import Experiment, PlanError, Step

RECORD = "experiment.json"


def producer(path: Path) -> tuple[Path, dict[str, Any]] | None:
    """(experiment directory, step record) of the experiment step whose output ``path`` is, if any."""
    for parent in path.parents:
        record_file = parent / RECORD
        if not record_file.is_file():
            continue
        try:
            record = json.loads(record_file.read_text())
        except (OSError, ValueError):
            return None
        rel = path.relative_to(parent).as_posix()
        for step in record.get("steps") or []:
            if isinstance(step, dict) and step.get("out") == rel:
                return parent, step
        return None
    return None


class Hashes:
    """Content hashes of paths, each computed once per run (a dataset can be gigabytes)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self._known: dict[str, str | None] = {}

    def __call__(self, path: str) -> str | None:
        if path not in self._known:
            self._known[path] = content_hash(self.out / path)  # an absolute path stays absolute
        return self._known[path]

    def made(self, path: str) -> str | None:
        """The hash of an output just finished (hashed afresh: it did not exist or was partial before)."""
        self._known.pop(path, None)
        return self(path)


def check(exp: Experiment, states: dict[str, dict[str, Any]], steps: list[Step], hashes: Hashes) -> None:
    """PlanError (one line) if an input of ``steps`` that exists now differs from what made or read it."""
    for step in steps:
        for path, made_by in exp.inputs(step).items():
            if made_by is not None and states[made_by].get("status") != "done":
                continue  # made in this run, before the step starts
            now = hashes(path)
            if now is None:
                continue  # an external input that is missing: the step fails naming it
            if made_by is not None:
                expected = states[made_by].get("output_hash")
                where = f"step {made_by} made it"
            else:
                found = producer(Path(path))
                expected = found[1].get("output_hash") if found else None
                where = f"step {found[1].get('id')} of {found[0]} made it" if found else ""
            if expected is not None and expected != now:
                raise PlanError(f"{path} changed since {where} (hash {_short(expected)}, now {_short(now)}); "
                                f"re-run that step, or restore the data, before running {step.id}")
            for other, state in states.items():
                seen = (state.get("inputs") or {}).get(path)
                if seen is not None and seen != now:
                    raise PlanError(f"{path} changed since step {other} read it (hash {_short(seen)}, now "
                                    f"{_short(now)}); restore it, or run this experiment afresh in another --out")


def _short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]
