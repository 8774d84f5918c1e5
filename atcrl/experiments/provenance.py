"""Where and from what a step ran: the git state, the machine, and content hashes of files.

Torch-free on purpose (the runner must not pay torch's import, nor initialise CUDA in the parent of
the steps that use the GPU): the torch version and its CUDA build are read from the installed
package's metadata and ``torch/version.py``, and the GPUs from ``nvidia-smi`` when it is on PATH.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")
"""/proc/cpuinfo flags that decide which CPU kernels torch can use (recorded when present)."""
CHUNK = 1 << 20


def _run(argv: list[str], cwd: Path | None = None) -> str | None:
    """stdout of a short command, or None when it is missing, fails or hangs."""
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


# --------------------------------------------------------------------------- git


def git_state() -> dict[str, Any]:
    """{"git_commit": sha or None, "git_dirty": bool or None} of the atcrl checkout that runs the step.

    Dirty means tracked files differ from the commit or untracked, not-ignored files exist
    (a new module changes what runs as much as an edit does)."""
    here = Path(__file__).resolve().parent
    commit = _run(["git", "rev-parse", "HEAD"], here)
    if not commit or not commit.strip():
        return {"git_commit": None, "git_dirty": None}
    status = _run(["git", "status", "--porcelain"], here)
    return {"git_commit": commit.strip(), "git_dirty": None if status is None else bool(status.strip())}


# --------------------------------------------------------------------------- machine


def cpu_info(text: str | None = None) -> dict[str, Any]:
    """CPU model and the ISA flags of ISA_FLAGS it has, from /proc/cpuinfo (``text``: its content)."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            text = ""
    model, flags = None, set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return {"cpu": model or platform.processor() or platform.machine(),
            "isa": [f for f in ISA_FLAGS if f in flags]}


def gpu_info(smi: str | None = None) -> list[dict[str, Any]]:
    """One entry per NVIDIA GPU (name, memory MiB, driver, the driver's CUDA version) from nvidia-smi;
    empty without one. ``smi``: (query CSV, plain output), for tests."""
    if smi is None:
        if shutil.which("nvidia-smi") is None:
            return []
        query = _run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits"])
        plain = _run(["nvidia-smi"]) or ""
        if query is None:
            return []
    else:
        query, plain = smi.split("\n\n", 1) if "\n\n" in smi else (smi, "")
    cuda = re.search(r"CUDA Version:\s*([0-9.]+)", plain)
    gpus = []
    for line in query.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3:
            memory = int(parts[1]) if parts[1].isdigit() else None
            gpus.append({"name": parts[0], "memory_mib": memory, "driver": parts[2],
                         "driver_cuda": cuda.group(1) if cuda else None})
    return gpus


def torch_info() -> dict[str, Any]:
    """The installed torch's version and the CUDA it was built with (None: a CPU build), without importing it."""
    from importlib.metadata import PackageNotFoundError, version
    from importlib.util import find_spec

    try:
        found = version("torch")
    except PackageNotFoundError:
        return {"torch": "not installed", "torch_cuda": None}
    spec = find_spec("torch")
    cuda = None
    if spec is not None and spec.submodule_search_locations:
        try:
            text = (Path(next(iter(spec.submodule_search_locations))) / "version.py").read_text()
            match = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
            cuda = match.group(1) if match else None
        except OSError:
            pass
    return {"torch": found, "torch_cuda": cuda}


@cache
def machine() -> dict[str, Any]:
    """The machine a step runs on (the same for every step of one runner, hence cached)."""
    from atcrl.cpus import usable_cores

    return {**cpu_info(), "cores": os.cpu_count() or 1, "usable_cores": usable_cores(), "gpus": gpu_info(),
            **torch_info(), "python": platform.python_version(), "platform": platform.platform()}


# --------------------------------------------------------------------------- content hashes


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def content_hash(path: Path) -> str | None:
    """sha256 of a file, or of a directory tree (every file's relative path and content, in sorted order);
    None when nothing is there. An exported encoder named without its suffix hashes its two files."""
    if path.is_file():
        return "sha256:" + _file_digest(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        base = path
    else:
        files = [p for p in (path.with_suffix(".safetensors"), path.with_suffix(".json")) if p.is_file()]
        base = path.parent
        if not files:
            return None
    h = hashlib.sha256()
    for f in files:
        h.update(f.relative_to(base).as_posix().encode() + b"\0" + _file_digest(f).encode() + b"\n")
    return "sha256:" + h.hexdigest()
