"""A built wheel is the whole product: installed away from the checkout, `gppf-train` finds its
configs (and `launcher=slurm` its sbatch script) inside the package and trains from an empty
folder. The wheel is built offline from a copy of this checkout (no build isolation, no
dependencies) and installed into a target folder that comes first on the path, so nothing of
the checkout is read.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from gppf_dist.logging.metrics import read_metrics

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the wheel, the folder it is installed into)."""
    tmp = tmp_path_factory.mktemp("wheel")
    # built from a copy: setuptools builds in the source tree (build/, egg-info)
    source = tmp / "source"
    skip = shutil.ignore_patterns(".git", ".venv", "build", "runs", "shards", "*.egg-info")
    shutil.copytree(REPO, source, symlinks=True, ignore=skip)
    build = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps",
             "--no-build-isolation", "--no-index", "-q", "-w", str(tmp / "dist")]  # fmt: skip
    proc = subprocess.run(build, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (tmp / "dist").glob("gppf_dist-*.whl")
    site = tmp / "site"
    install = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
               "--target", str(site), str(wheel)]  # fmt: skip
    proc = subprocess.run(install, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return wheel, site


def _env(site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GPPF_CONF_DIR", "GPPF_SBATCH_SCRIPT")}
    env["PYTHONPATH"] = str(site)
    return env


def test_the_wheel_holds_the_configs_and_the_sbatch_script(installed: tuple[Path, Path]) -> None:
    names = set(zipfile.ZipFile(installed[0]).namelist())
    shipped = {f"gppf_dist/{p.relative_to(REPO / 'src' / 'gppf_dist')}"
               for p in (REPO / "src" / "gppf_dist" / "conf").rglob("*.yaml")}  # fmt: skip
    assert {"gppf_dist/conf/train.yaml", "gppf_dist/conf/experiment/demo.yaml"} <= shipped
    assert shipped <= names, sorted(shipped - names)
    assert "gppf_dist/launch/gppf.sbatch" in names


def test_the_installed_wheel_trains_from_an_empty_folder(
    installed: tuple[Path, Path], tmp_path: Path, tiny_shards: Path
) -> None:
    _, site = installed
    empty = tmp_path / "empty"
    empty.mkdir()
    env = _env(site)
    where = subprocess.run(
        [sys.executable, "-c", "import gppf_dist.config.resources as r; print(r.conf_dir()); "
         "from gppf_dist.launch.slurm import sbatch_script; print(sbatch_script())"],
        cwd=empty, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert where.returncode == 0, where.stderr[-2000:]
    conf, sbatch = where.stdout.split()
    assert Path(conf).is_relative_to(site) and Path(sbatch).is_relative_to(site), where.stdout
    train = [str(site / "bin" / "gppf-train"), "experiment=demo", "trainer.max_steps=2",
             "launcher.nproc=1", f"data.root={tiny_shards}", "logger=none",
             "trainer.progress=false", "trainer.eval_at_start=false"]  # fmt: skip
    proc = subprocess.run(train, cwd=empty, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    records = read_metrics(empty / "runs" / "demo" / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2]
