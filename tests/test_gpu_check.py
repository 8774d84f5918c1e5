"""scripts/gpu_check.py, the one-command GPU check, run end to end at its smoke sizes on this machine.

Every section runs (the CUDA tests skip without a GPU, and the graph path runs eagerly on the CPU), the
JSON and markdown hold every section and target, and no section failed: what the GPU machine will run is
the same code at the sizes asserted below.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import gpu_check


def test_full_sizes_are_the_checks_the_gpu_issue_asks_for():
    s = gpu_check.Sizes()
    assert (s.env, s.image_size, s.batch_size) == ("dmc:cartpole-swingup", 84, 256)
    assert (s.warmup_steps, s.dmc100k_steps, s.dmc100k_eval_episodes) == (1000, 12_500, 10)  # DMC-100k
    assert s.sharing == (1, 4, 8)
    assert [t[2] for t in gpu_check.TARGETS] == [300, 1000, 300, 4000, 5, 750]


@pytest.mark.slow
def test_the_smoke_check_runs_every_section_and_writes_its_summary(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--smoke", "--device", "cpu",
                           "--out", str(tmp_path)], check=False, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    assert report["errors"] == {}
    assert set(report["sections"]) == {"cuda_tests", "sac_updates", "pretrain", "ppo_updates", "agents", "dmc100k"}
    agents = report["sections"]["agents"]
    assert {row["agent"] for row in agents} == {"decoupled SAC + ATC, graph", "decoupled SAC + ATC, eager",
                                                "decoupled SAC + ATC, graph, env overlapped",
                                                "RAD SAC (end-to-end), graph", "frozen SAC (latent replay), graph",
                                                "PPO + ATC"}
    assert all("error" not in row and row["steps_per_s_total"] > 0 for row in agents), agents
    assert [r["runs"] for r in agents if r["agent"] == "PPO + ATC"] == [1, 2]
    updates = report["sections"]["sac_updates"]
    assert updates["eager"]["updates_per_s"] > 0 and updates["graph"]["captured"] is False  # no capture on CPU
    assert report["sections"]["cuda_tests"]["exit_code"] == 0
    for section, rate in (("sac_updates", "updates_per_s"), ("pretrain", "updates_per_s"),
                          ("ppo_updates", "minibatch_updates_per_s")):  # both paths run (eagerly, on the CPU)
        got = report["sections"][section]
        assert got["eager"][rate] > 0 and got["graph"][rate] > 0 and got["graph_vs_eager"] > 0, section
    assert report["sections"]["ppo_updates"]["graph"]["captured"] is False
    assert report["sections"]["pretrain"]["updates_per_s"] > 0
    assert report["sections"]["dmc100k"]["agent_steps"] == 60
    assert report["machine"]["isa"] is not None and report["machine"]["cores"] >= 1
    md = (tmp_path / "gpu-check.md").read_text()
    for target in report["targets"]:
        assert target["target"] in md
    for row in ("| SAC + online ATC |", "| offline ATC pretraining |", "| PPO minibatch |"):
        assert row in md
    assert sum(t["measured"] is not None for t in report["targets"]) == 5  # all but 8 runs sharing (smoke: 2)
