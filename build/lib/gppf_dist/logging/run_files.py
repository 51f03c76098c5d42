"""Small JSON files in the run directory (eval.json), written atomically: a reader (or a crash)
sees the old content or the new, never half of it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json_atomic(path: Path, value: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=2))
    tmp.replace(path)


def read_json(path: Path) -> Any | None:
    """The file's value, or None when it does not exist."""
    return json.loads(path.read_text()) if path.is_file() else None
