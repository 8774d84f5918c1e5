"""Provenance per experiment step: the git state and machine of the attempt that made an output (kept by a
resume), wall time summed over attempts, input hashes, and the refusal to run on an input that changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atcrl.experiments import commands, provenance, record, runner
from atcrl.experiments.runner import Runner
from atcrl.experiments.spec import Experiment, PlanError, Step

CPUINFO = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2
"""
SMI = ("NVIDIA H200, 143771, 570.86.15\nNVIDIA H200, 143771, 570.86.15\n\n"
       "| NVIDIA-SMI 570.86.15    Driver Version: 570.86.15    CUDA Version: 12.8     |")


def test_machine_parts_are_parsed():
    cpu = provenance.cpu_info(CPUINFO)
    assert cpu == {"cpu": "Intel(R) Xeon(R) Platinum 8480+",
                   "isa": ["avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"]}
    assert provenance.cpu_info("flags : fpu sse2\n")["isa"] == []
    gpus = provenance.gpu_info(SMI)
    assert gpus == [{"name": "NVIDIA H200", "memory_mib": 143771, "driver": "570.86.15", "driver_cuda": "12.8"}] * 2
    info = provenance.torch_info()
    assert info["torch"][0].isdigit() and (info["torch_cuda"] is None or info["torch_cuda"][0].isdigit())
    m = provenance.machine()
    assert m.keys() >= {"cpu", "isa", "cores", "gpus", "torch", "torch_cuda", "python"}


def test_content_hash_sees_any_change_in_a_tree(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a.txt").write_text("a")
    (tmp_path / "d" / "sub" / "b.txt").write_text("b")
    first = provenance.content_hash(tmp_path / "d")
    assert first.startswith("sha256:") and first == provenance.content_hash(tmp_path / "d")
    (tmp_path / "d" / "sub" / "b.txt").write_text("c")
    assert provenance.content_hash(tmp_path / "d") != first
    (tmp_path / "d" / "sub" / "b.txt").rename(tmp_path / "d" / "sub" / "b2.txt")  # a rename is a change too
    assert len({first, provenance.content_hash(tmp_path / "d")}) == 2
    assert provenance.content_hash(tmp_path / "none") is None
    (tmp_path / "enc.safetensors").write_bytes(b"w")
    (tmp_path / "enc.json").write_text("{}")
    assert provenance.content_hash(tmp_path / "enc") is not None  # an encoder named without its suffix


def collect(step_id: str, depends: tuple[str, ...] = (), episodes: int = 1) -> Step:
    command = ("collect", "--env", "tiny:point", "--episodes", str(episodes), "--image-size", "32", "--append",
               "--out", step_id)
    return Step(step_id, "collect", "demonstrations", "random", 0, "tiny:point", command, depends)


def probe(step_id: str, data: str) -> Step:
    """A random-encoder probe of a dataset given by absolute path, as `--data`/`--probe-data` give it."""
    return commands.probe(step_id, group="probe", variant="random", seed=0, env="tiny:point", encoder="random",
                          data=(data,), frames=200)


def load(out: Path) -> dict:
    return {s["id"]: s for s in json.loads((out / record.RECORD).read_text())["steps"]}


def test_resume_keeps_the_first_commit_and_sums_wall_time(tmp_path, monkeypatch):
    exp = Experiment("ul-benchmark", "tiny", (0,), "q", "n", (collect("d"),))
    monkeypatch.setattr(runner, "git_state", lambda: {"git_commit": "a" * 40, "git_dirty": False})
    assert Runner(exp, tmp_path, echo=lambda _: None).run() == 0
    first = load(tmp_path)["d"]
    assert (first["git_commit"], first["git_dirty"]) == ("a" * 40, False)
    assert first["machine"]["cpu"] and first["output_hash"].startswith("sha256:")
    # The runner lost track of the step (as after a kill): the next run continues its output at another commit.
    rec = json.loads((tmp_path / record.RECORD).read_text())
    rec["steps"][0]["status"] = "running"
    (tmp_path / record.RECORD).write_text(json.dumps(rec))
    monkeypatch.setattr(runner, "git_state", lambda: {"git_commit": "b" * 40, "git_dirty": True})
    assert Runner(exp, tmp_path, echo=lambda _: None).run() == 0
    again = load(tmp_path)["d"]
    assert [a["git_commit"] for a in again["attempts"]] == ["a" * 40, "b" * 40]
    assert [a["continued"] for a in again["attempts"]] == [False, True]
    assert (again["git_commit"], again["git_dirty"]) == ("a" * 40, False)  # the first attempt's, not overwritten
    attempts = [a["wall_time_s"] for a in again["attempts"]]
    assert all(t > 0 for t in attempts)
    assert again["wall_time_s"] == pytest.approx(sum(attempts), abs=0.11)
    assert again["wall_time_s"] > first["wall_time_s"]
    # A top-level re-record does not move the creation's git state either.
    assert json.loads((tmp_path / record.RECORD).read_text())["git_commit"] == rec["git_commit"]


def test_changed_input_is_refused(tmp_path):
    # Experiment A makes a dataset; B reads it by absolute path (as --data gives it) and a step of its own.
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a = Experiment("ul-benchmark", "tiny", (0,), "q", "n", (collect("demos", episodes=4),))
    assert Runner(a, a_dir, echo=lambda _: None).run() == 0
    demos = str((a_dir / "demos").resolve())
    b = Experiment("ablations", "tiny", (0,), "q", "n", (probe("first", demos),))
    assert b.inputs(b.steps[0]) == {demos: None}
    assert Runner(b, b_dir, echo=lambda _: None).run() == 0
    assert load(b_dir)["first"]["inputs"][demos] == load(a_dir)["demos"]["output_hash"]

    meta = a_dir / "demos" / "meta.json"
    meta.write_text(meta.read_text() + " ")  # the producer's output changes after the fact
    grown = Experiment("ablations", "tiny", (0,), "q", "n", (b.steps[0], probe("second", demos)))
    with pytest.raises(PlanError, match=r"changed since step demos of .*a made it.*before running second") as e:
        Runner(grown, b_dir, echo=lambda _: None).run()
    assert "\n" not in str(e.value)
    assert not (b_dir / "second.json").exists()


def test_input_changed_since_a_step_read_it_or_made_it_is_refused(tmp_path):
    exp = Experiment("ul-benchmark", "tiny", (0,), "q", "n", (collect("d"), collect("e", depends=("d",))))
    assert Runner(exp, tmp_path, echo=lambda _: None).run() == 0
    states = load(tmp_path)
    assert states["e"]["inputs"] == {"d": states["d"]["output_hash"]}
    (tmp_path / "d" / "meta.json").write_text("{}")
    grown = Experiment("ul-benchmark", "tiny", (0,), "q", "n", (*exp.steps, collect("f", depends=("d",))))
    with pytest.raises(PlanError, match="d changed since step d made it"):
        Runner(grown, tmp_path, echo=lambda _: None).run()
    # Recorded by a reader only (the producer's hash lost): the reader's hash still guards the input.
    rec = json.loads((tmp_path / record.RECORD).read_text())
    rec["steps"][0].pop("output_hash")
    (tmp_path / record.RECORD).write_text(json.dumps(rec))
    with pytest.raises(PlanError, match="d changed since step e read it"):
        Runner(grown, tmp_path, echo=lambda _: None).run()


def test_the_runner_and_its_provenance_stay_torch_free():
    import subprocess
    import sys

    code = ("import sys; from atcrl.experiments import cli, provenance; provenance.machine(); provenance.git_state(); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
