"""Every python block of docs/api.md runs, top to bottom in one namespace; every public name is documented."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

import atcrl

DOC = Path(atcrl.__file__).parents[1] / "docs" / "api.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def test_every_public_name_is_documented():
    text = DOC.read_text()
    missing = [name for name in atcrl.__all__ if name != "__version__" and f"`{name}" not in text]
    assert not missing, f"docs/api.md does not document {missing}"


def test_api_doc_examples_run(tmp_path, monkeypatch):
    pytest.importorskip("stable_baselines3")
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 7
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for i, block in enumerate(blocks):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # check_env's notes about the wrapped env and the inf bound
            exec(compile(block, f"docs/api.md block {i + 1}", "exec"), namespace)  # noqa: S102 (the docs run)
    assert (tmp_path / "runs" / "atc-catch" / "encoder.json").is_file()
    assert namespace["metrics"]["ul/valid_fraction"] == 1.0
