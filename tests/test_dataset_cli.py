"""`atcrl dataset info|validate`: what they print and the exit codes scripts rely on."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from test_dataset import make_episode, write_dataset

from atcrl.data.dataset_cli import (
    EXIT_BAD_FILES,
    EXIT_BAD_INPUT,
    EXIT_OK,
    InfoConfig,
    ValidateConfig,
    main,
    run_info,
    run_validate,
)


@pytest.fixture
def episodes():
    rng = np.random.default_rng(3)
    return [
        make_episode(rng, steps, task=task, physics=True)
        for steps, task in [(5, "dmc:cartpole-swingup"), (9, "dmc:walker-walk"), (7, "dmc:walker-walk")]
    ]


def test_validate_exit_codes(tmp_path, episodes, capsys):
    paths = write_dataset(tmp_path / "ds", episodes)
    assert run_validate(ValidateConfig(tmp_path / "ds")) == EXIT_OK
    assert f"3 good episode(s), {sum(len(e) for e in episodes)} steps, 0 bad" in capsys.readouterr().out

    data = bytearray(paths[2].read_bytes())
    data[len(data) // 2] ^= 0x01
    paths[2].write_bytes(bytes(data))
    assert run_validate(ValidateConfig(tmp_path / "ds")) == EXIT_BAD_FILES
    out = capsys.readouterr().out
    assert f"BAD  {paths[2]}" in out and "2 good episode(s)" in out and str(paths[0]) not in out

    assert run_validate(ValidateConfig(tmp_path / "missing")) == EXIT_BAD_INPUT
    assert "does not exist" in capsys.readouterr().err


def test_validate_refuses_newer_version_and_empty(tmp_path, episodes, capsys):
    write_dataset(tmp_path / "ds", episodes)
    meta = json.loads((tmp_path / "ds" / "meta.json").read_text())
    (tmp_path / "ds" / "meta.json").write_text(json.dumps({**meta, "format_version": 99}))
    assert run_validate(ValidateConfig(tmp_path / "ds")) == EXIT_BAD_INPUT
    assert "version 99" in capsys.readouterr().err

    for path in (tmp_path / "ds" / "episodes").iterdir():
        path.unlink()
    (tmp_path / "ds" / "meta.json").write_text(json.dumps(meta))
    assert run_validate(ValidateConfig(tmp_path / "ds")) == EXIT_BAD_FILES
    assert "has no episodes" in capsys.readouterr().err


def test_info_reports_the_data(tmp_path, episodes, capsys):
    write_dataset(tmp_path / "ds", episodes, frame_stack=3, action_repeat=8)
    assert run_info(InfoConfig(tmp_path / "ds")) == EXIT_OK
    out = {line[:10].strip(): line[10:] for line in capsys.readouterr().out.splitlines()}
    returns = [float(e.rewards.sum(dtype=np.float64)) for e in episodes]
    steps = sum(len(e) for e in episodes)
    assert out["episodes"].startswith("3 (3 terminated)")
    assert out["steps"].startswith(f"{steps} (x action_repeat 8 = {steps * 8} env steps)")
    assert out["returns"] == f"mean {np.mean(returns):.3f}  min {min(returns):.3f}  max {max(returns):.3f}"
    assert out["tasks"] == "dmc:cartpole-swingup (1), dmc:walker-walk (2)"
    assert out["frames"] == "3x16x16 uint8, stacked by 3"
    assert out["physics"] == "5 dims per frame"
    # every array of a loaded episode, down to the two flags and the task string
    ram = sum(
        e.frames.nbytes + e.actions.nbytes + e.rewards.nbytes + e.physics.nbytes + 2 + np.array(e.task).nbytes
        for e in episodes
    )
    assert f"({ram} bytes)" in out["in RAM"]
    disk = sum(p.stat().st_size for p in (tmp_path / "ds").rglob("*") if p.is_file())
    assert f"({disk} bytes)" in out["on disk"]


def test_info_on_bad_input(tmp_path, capsys):
    assert run_info(InfoConfig(tmp_path / "missing")) == EXIT_BAD_INPUT
    assert "error: no dataset at" in capsys.readouterr().err


def test_command_line_parsing_and_process_exit_code(tmp_path, episodes):
    paths = write_dataset(tmp_path / "ds", episodes)
    assert main(["validate", str(tmp_path / "ds")]) == EXIT_OK
    paths[0].write_bytes(paths[0].read_bytes()[:50])
    result = subprocess.run(
        [sys.executable, "-m", "atcrl.data.dataset_cli", "validate", str(tmp_path / "ds")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == EXIT_BAD_FILES
    assert "ep_000000.npz" in result.stdout
