"""Reading the small JSON files runs and exports keep beside their weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json(path: Path, error: type[Exception]) -> Any:
    """Parse ``path``; a file that is not valid JSON raises ``error`` naming the file."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{path} is corrupt: not valid JSON ({e})") from e
