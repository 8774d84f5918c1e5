"""The built wheel, installed non-editably into a fresh venv, runs `atcrl bench --quick` outside the source tree."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from atcrl.bench.cli import SECTIONS

ROOT = Path(__file__).resolve().parents[1]
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False, **kwargs)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _build_wheel(tmp_path: Path) -> Path:
    """The wheel of a copy of the source (building in place would leave build/ and *.egg-info in the tree)."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "atcrl", src / "atcrl", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    _run([*PIP, "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(tmp_path / "dist"), str(src)])
    (wheel,) = (tmp_path / "dist").glob("atcrl-*.whl")
    return wheel


def _venv_with_this_environment(path: Path) -> Path:
    """A venv that sees this interpreter's packages (torch, numpy, ...) but not its atcrl; returns its python.

    --system-site-packages alone would show the base interpreter's packages, not those of a venv this test
    runs in, so this environment's site directories are added by a .pth file. Their own .pth files (an
    editable atcrl's import hook among them) are not run that way, and the venv's site-packages comes first.
    """
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(path)])
    python = path / "bin" / "python"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    (Path(purelib) / "atcrl_test_parent_env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="the venv layout (bin/) is POSIX")
def test_the_installed_wheel_runs_the_quick_bench_outside_the_source_tree(tmp_path):
    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert {"atcrl/bench/cli.py", "atcrl/bench/replay_sampling.py", "atcrl/process.py"} <= set(names)
    assert not [n for n in names if n.startswith(("bench/", "atcrl/bench_"))], names

    python = _venv_with_this_environment(tmp_path / "venv")
    _run([*PIP, "--python", str(python), "install", "--no-deps", "--no-build-isolation", "--ignore-installed",
          str(wheel)])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = _run([str(python), "-c", "import atcrl; print(atcrl.__file__)"], cwd=elsewhere, env=env).stdout.strip()
    assert Path(where).is_relative_to(tmp_path / "venv"), f"imported {where}, not the installed wheel"

    out = elsewhere / "bench-out"
    proc = _run([str(tmp_path / "venv" / "bin" / "atcrl"), "bench", "--quick", "--threads", "1", "--out", "bench-out"],
                cwd=elsewhere, env=env)
    report = json.loads((out / "bench.json").read_text())
    assert set(report["sections"]) == set(SECTIONS)
    failed = {k: v.get("error") or v.get("errors") for k, v in report["sections"].items() if v.get("error") or v.get("errors")}
    assert not failed, failed
    # The replay section builds its pixel replay with atcrl.bench.replay_sampling, from the installed package.
    assert report["sections"]["replay"]["pixels"]["bytes_per_100k"] > report["sections"]["replay"]["latents"]["bytes_per_100k"]
    markdown = (out / "bench.md").read_text()
    assert all(f"## {name}\n" in markdown for name in SECTIONS) and "FAILED" not in markdown
    assert "wrote" in proc.stdout
