"""Every test file in tests/ is collected by `pytest tests`, the command CI runs.

pytest skips folders by name (`norecursedirs`; its default list holds `dist`, `build` and
`venv`), so a whole folder of tests can silently never run. This compares the test files git
tracks with the files `pytest --collect-only` reports, and names any it missed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def tracked_test_files(root: Path) -> set[str]:
    """`tests/**/test_*.py` under `root`: the ones git tracks, or every one outside a git
    checkout."""
    if (root / ".git").exists():
        out = subprocess.run(
            ["git", "ls-files", "-z", "tests"], cwd=root, capture_output=True, check=True
        ).stdout.decode()
        names = [n for n in out.split("\0") if n]
    else:
        names = [str(p.relative_to(root)) for p in (root / "tests").rglob("*.py")]
    return {n for n in names if Path(n).name.startswith("test_") and n.endswith(".py")}


def collected_files(root: Path) -> set[str]:
    """The files `pytest --collect-only tests` collects tests from, run in `root`."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "tests"],
        cwd=root, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {line.split("::")[0] for line in proc.stdout.splitlines() if "::" in line}


def uncollected(root: Path) -> list[str]:
    return sorted(tracked_test_files(root) - collected_files(root))


def test_every_test_file_is_collected() -> None:
    missed = uncollected(REPO)
    assert not missed, f"pytest tests does not collect: {missed} (see norecursedirs)"
    assert any(f.startswith("tests/dist/") for f in tracked_test_files(REPO))


def _tree(root: Path, norecursedirs: list[str] | None) -> None:
    for folder in ("unit", "dist"):
        (root / "tests" / folder).mkdir(parents=True)
        (root / "tests" / folder / f"test_{folder}.py").write_text("def test_it():\n    pass\n")
    ini = "[tool.pytest.ini_options]\n"
    if norecursedirs is not None:
        ini += "norecursedirs = [" + ", ".join(f'"{d}"' for d in norecursedirs) + "]\n"
    (root / "pyproject.toml").write_text(ini)


def test_the_guard_names_a_folder_pytest_skips(tmp_path: Path) -> None:
    """Under pytest's default `norecursedirs` a folder named `dist` is missed and named; under
    this project's setting it is collected."""
    _tree(tmp_path / "default", None)
    assert uncollected(tmp_path / "default") == ["tests/dist/test_dist.py"]
    ours = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    _tree(tmp_path / "ours", ours["norecursedirs"])
    assert uncollected(tmp_path / "ours") == []


def test_make_tests_parallel_schedule_keeps_each_module_on_one_worker(tmp_path: Path) -> None:
    """`make test`'s `-n 2 --dist loadgroup` with tests/conftest.py's scheduler: every test of a
    module runs on the same worker (its module fixtures are built once), and the modules named
    in SHARED_RESOURCES run together. (xdist's own group marks silently stopped grouping under
    pytest 9.2; this runs a real two-worker session to see it.)"""
    tests = tmp_path / "tests"
    (tests / "integration").mkdir(parents=True)
    (tests / "conftest.py").write_text(
        "from tests.conftest import pytest_xdist_make_scheduler  # noqa: F401\n"
    )
    body = "".join(f"def test_{i}():\n    pass\n\n\n" for i in range(4))
    for name in ("test_one", "test_two", "test_cluster_slurm", "test_cluster_slurm_two_nodes"):
        (tests / "integration" / f"{name}.py").write_text(body)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-v",
         "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(tests)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    workers: dict[str, set[str]] = {}
    for line in proc.stdout.splitlines():
        if line.startswith("[gw") and "PASSED" in line:
            module = Path(line.split("PASSED ")[1].split("::")[0]).stem
            workers.setdefault(module, set()).add(line.split("]")[0])
    assert sorted(workers) == ["test_cluster_slurm", "test_cluster_slurm_two_nodes",
                               "test_one", "test_two"], proc.stdout  # fmt: skip
    assert all(len(w) == 1 for w in workers.values()), workers
    assert workers["test_cluster_slurm"] == workers["test_cluster_slurm_two_nodes"]
