"""The package layering in docs/architecture.md: agents never import UL code, and UL never imports agents."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import atcrl

ROOT = Path(atcrl.__file__).parent


def _imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("package,forbidden", [("rl", "atcrl.ul"), ("ul", "atcrl.rl")])
def test_no_imports_across_the_agent_ul_boundary(package, forbidden):
    files = sorted((ROOT / package).glob("*.py"))
    assert files, f"no modules found in atcrl/{package}"
    offenders = {
        f.name: sorted(m for m in _imported_modules(f) if m == forbidden or m.startswith(forbidden + "."))
        for f in files
    }
    assert not {k: v for k, v in offenders.items() if v}, f"atcrl/{package} imports {forbidden}: {offenders}"
