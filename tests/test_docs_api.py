"""Every python block of docs/api.md (and of README.md's "Use an encoder in your own code") runs, top to bottom
in one namespace; every public name is documented."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

import atcrl

ROOT = Path(atcrl.__file__).parents[1]
DOC = ROOT / "docs" / "api.md"
README_SECTION = "## Use an encoder in your own code"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def readme_section() -> str | None:
    """The README section from its heading to the next heading of the same level (None when absent)."""
    text = (ROOT / "README.md").read_text()
    start = text.find(README_SECTION + "\n")
    if start < 0:
        return None
    rest = text[start + len(README_SECTION):]
    end = re.search(r"^## ", rest, flags=re.MULTILINE)
    return rest[: end.start()] if end else rest


def run_blocks(text: str, where: str) -> dict:
    namespace: dict = {}
    for i, block in enumerate(python_blocks(text)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # check_env's notes about the wrapped env and the inf bound
            exec(compile(block, f"{where} block {i + 1}", "exec"), namespace)  # noqa: S102 (the docs run)
    return namespace


def test_every_public_name_is_documented():
    text = DOC.read_text()
    missing = [name for name in atcrl.__all__ if name != "__version__" and f"`{name}" not in text]
    assert not missing, f"docs/api.md does not document {missing}"


def test_api_doc_examples_run(tmp_path, monkeypatch):
    for module in ("stable_baselines3", "onnxruntime", "onnxscript"):
        pytest.importorskip(module)
    text = DOC.read_text()
    assert len(python_blocks(text)) >= 8
    monkeypatch.chdir(tmp_path)
    namespace = run_blocks(text, "docs/api.md")
    assert (tmp_path / "runs" / "atc-catch" / "encoder.json").is_file()
    assert namespace["metrics"]["ul/valid_fraction"] == 1.0


def test_readme_encoder_examples_run(tmp_path, monkeypatch):
    pytest.importorskip("stable_baselines3")
    section = readme_section()
    if section is None:
        pytest.skip(f"README.md has no {README_SECTION!r} section yet")
    assert python_blocks(section), "the README section shows no python example"
    monkeypatch.chdir(tmp_path)
    namespace = run_blocks(section, "README.md")
    assert namespace["encoder"].feature_dim > 0
