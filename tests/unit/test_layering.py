"""House rules a test can check: the layer table (ARCHITECTURE.md) and import direction, no
import circle, small folders, one DeepSpeed module, no DictConfig in library code."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "gppf_dist"

ARCHITECTURE = SRC.parents[1] / "ARCHITECTURE.md"

# The layer of each package, bottom up. A package imports only packages of lower layers, and
# each sits exactly one layer above the highest package it imports (0: it imports none): the
# table is the measured order, not a wish. ARCHITECTURE.md's table states the same, row by row.
LAYERS: dict[str, int] = {
    "config": 0,
    "dist": 0,
    "logging": 0,
    "tasks": 0,
    "health": 1,
    "model": 1,
    "data": 1,
    "simt": 1,
    "parallel": 2,
    "checkpoint": 2,
    "finetune": 2,
    "experiments": 2,
    "preflight": 3,
    "launch": 3,
    "engine": 4,
    "bench": 5,
    "cli": 5,
}


def package_imports() -> dict[str, set[str]]:
    """Each package -> the other packages of gppf_dist its modules import (anywhere in a file,
    function-level imports too; `if TYPE_CHECKING:` blocks are not imports at run time)."""
    graph: dict[str, set[str]] = {name: set() for name in LAYERS}
    for path in SRC.rglob("*.py"):
        package = path.relative_to(SRC).parts[0]
        if package.endswith(".py"):
            continue
        for name in imports(path):
            parts = name.split(".")
            if parts[0] == "gppf_dist" and len(parts) > 1 and parts[1] != package:
                graph.setdefault(package, set()).add(parts[1])
    return graph


def test_every_package_has_a_layer() -> None:
    packages = {p.name for p in SRC.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(LAYERS), packages ^ set(LAYERS)


def test_packages_import_one_way() -> None:
    bad = [
        f"{package} (layer {LAYERS[package]}) imports {other} (layer {LAYERS.get(other)})"
        for package, others in package_imports().items()
        for other in others
        if LAYERS.get(other, 99) >= LAYERS[package]
    ]
    assert not bad, "\n".join(bad)


def test_layers_are_the_measured_order() -> None:
    graph = package_imports()
    wrong = {
        package: (layer, 1 + max((LAYERS[o] for o in graph[package]), default=-1))
        for package, layer in LAYERS.items()
        if layer != 1 + max((LAYERS[o] for o in graph[package]), default=-1)
    }
    assert not wrong, f"package: (table, measured) {wrong}"


def test_architecture_md_states_the_same_table() -> None:
    rows = re.findall(r"^\| (\d+) \| ([^|]+) \|", ARCHITECTURE.read_text(), re.M)
    stated = {name: int(layer) for layer, cell in rows for name in re.findall(r"`(\w+)`", cell)}
    assert stated == LAYERS


def test_no_module_import_circle() -> None:
    """No two modules import each other, directly or through others (run-time imports only)."""
    graph = module_imports()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert not circles, circles


def module_imports() -> dict[str, set[str]]:
    modules = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def owner(name: str) -> str:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for name in imports(path, submodules=True):
            if name.startswith("gppf_dist.") and owner(name) not in ("", module):
                targets.add(owner(name))
        graph[module] = targets
    return graph


def test_no_folder_holds_more_than_15_modules() -> None:
    crowded = {
        str(d.relative_to(SRC)): n
        for d in [SRC, *(p for p in SRC.rglob("*") if p.is_dir())]
        if (n := len(list(d.glob("*.py")))) > 15
    }
    assert not crowded, crowded


def imports(path: Path, submodules: bool = False) -> list[str]:
    """The modules `path` imports at run time (with `submodules`, `from a import b` also
    names `a.b`, which is a module when `b` is one)."""
    tree = ast.parse(path.read_text())
    skip = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    names = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            if submodules:
                names += [f"{node.module}.{a.name}" for a in node.names]
    return names


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


def test_the_checkpoint_folder_is_spelled_in_one_module() -> None:
    """`<run.dir>/checkpoints` is `checkpoint.layout.checkpoints_dir`; no other module of src/
    builds the path itself (docstrings aside)."""
    spellers = set()
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
                and "checkpoints" in node.value.replace("\\", "/").split("/")
            ):
                spellers.add(str(path.relative_to(SRC)))
    assert spellers == {"checkpoint/layout.py"}, spellers


def test_no_module_imports_another_modules_private_names() -> None:
    """`from gppf_dist.x import _name` reaches into another module's insides: make it public."""
    bad = [
        f"{path.relative_to(SRC)}: from {node.module} import {alias.name}"
        for path in SRC.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gppf_dist")
        for alias in node.names
        if alias.name.startswith("_") and not alias.name.startswith("__")
    ]
    assert not bad, "\n".join(bad)


TASK_TYPE_NAMES = {"classification", "detection", "segmentation", "pose", "reid", "face"}
TASK_TYPE_NAMES |= {"attributes"}
LAUNCHER_NAMES = {"local", "deepspeed", "slurm"}


def compared_strings(path: Path) -> set[str]:
    """String constants `path` compares something with (`==`, `!=`, `in`, `not in`)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                for leaf in ast.walk(side):
                    if isinstance(leaf, ast.Constant) and isinstance(leaf.value, str):
                        found.add(leaf.value)
    return found


def test_only_a_task_type_or_a_launcher_knows_its_own_name() -> None:
    """A switch on a task type's name belongs in tasks/ (the type's own file), on a launcher's
    name in launch/: elsewhere a new one would need an edit (one file plus one registration)."""
    bad = []
    for path in SRC.rglob("*.py"):
        package = path.relative_to(SRC).parts[0]
        names = compared_strings(path)
        if package != "tasks" and names & TASK_TYPE_NAMES:
            bad.append(f"{path.relative_to(SRC)}: {sorted(names & TASK_TYPE_NAMES)}")
        if package != "launch" and names & LAUNCHER_NAMES:
            bad.append(f"{path.relative_to(SRC)}: {sorted(names & LAUNCHER_NAMES)}")
    assert not bad, "\n".join(bad)
