"""House rules a test can check: import direction, one DeepSpeed module, no DictConfig in
library code."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "gppf_dist"

# Each package may import only from the packages listed (and itself). The direction is bottom
# up: config and dist (process groups, the environment) at the bottom, then tasks / model / data /
# simt / parallel / checkpoint / logging, then engine (the step and the worker), then launch,
# bench and cli at the top. No exceptions: a lower layer that needs an upper one's type takes a
# Protocol (e.g. `dist.mesh.GroupLayout`).
ALLOWED = {
    "config": set(),
    "dist": {"config"},
    "tasks": {"config"},
    "model": {"config", "tasks"},
    "data": {"config", "tasks"},
    "simt": {"config", "dist", "tasks"},
    "parallel": {"config", "model", "simt", "tasks"},
    "checkpoint": {"config", "dist", "model", "data"},  # parameters by owner, data positions
    "logging": {"config", "dist"},
    "engine": {
        "config",
        "dist",
        "tasks",
        "model",
        "data",
        "simt",
        "parallel",
        "checkpoint",
        "logging",
    },
    "launch": {"config", "dist"},
    "bench": {  # checkpoint: `gppf-bench ckpt` times the checkpoint layer itself
        "config",
        "dist",
        "tasks",
        "model",
        "data",
        "simt",
        "parallel",
        "checkpoint",
        "engine",
    },
    "cli": {
        "config",
        "dist",
        "tasks",
        "model",
        "data",
        "simt",
        "parallel",
        "checkpoint",
        "logging",
        "engine",
        "launch",
        "bench",
    },
}


def imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_packages_import_one_way() -> None:
    bad = []
    for path in SRC.rglob("*.py"):
        package = path.relative_to(SRC).parts[0]
        if package not in ALLOWED:
            continue
        for name in imports(path):
            parts = name.split(".")
            internal = parts[0] == "gppf_dist" and len(parts) > 1 and parts[1] != package
            if internal and parts[1] not in ALLOWED[package]:
                bad.append(f"{path.relative_to(SRC)} imports {name}")
    assert not bad, "\n".join(bad)


def test_only_one_module_imports_deepspeed() -> None:
    users = {
        str(p.relative_to(SRC))
        for p in SRC.rglob("*.py")
        if any(n.split(".")[0] == "deepspeed" for n in imports(p))
    }
    assert users <= {"engine/deepspeed.py"}, users


def test_no_dictconfig_below_cli() -> None:
    users = [
        str(p.relative_to(SRC))
        for p in SRC.rglob("*.py")
        if "DictConfig" in p.read_text() and p.relative_to(SRC).parts[0] not in ("cli", "config")
    ]
    assert not users, users


def test_product_code_holds_no_test_code() -> None:
    """Test helpers and fixtures live under tests/: src/ neither imports them nor pytest."""
    bad = [
        str(p.relative_to(SRC))
        for p in SRC.rglob("*.py")
        if any(n.split(".")[0] in ("tests", "pytest") for n in imports(p))
        or "@pytest.fixture" in p.read_text()
        or p.stem in ("testing", "conftest")
    ]
    assert not bad, bad
