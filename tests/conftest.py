"""Shared fixtures: the real Hydra config, composed; a small synthetic shard corpus."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from gppf_dist.config.load import to_run_config
from gppf_dist.config.schema import RunConfig
from gppf_dist.config.store import register_schema

if TYPE_CHECKING:
    from tests.dist.run_pool import PoolRuns

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Node-local heartbeat folders (`health/heartbeat.py`) of the session's runs, killed ones included,
# go to one temporary folder, not /dev/shm; removed when the session ends.
_BEATS = tempfile.mkdtemp(prefix="gppf-test-beats-")
os.environ.setdefault("GPPF_LOCAL_HEARTBEAT_DIR", _BEATS)
atexit.register(shutil.rmtree, _BEATS, ignore_errors=True)

# The slow tier, decided here once (`make test-fast` runs everything else, `make test` both):
SLOW_FOLDERS = {"integration"}
"""Every test there starts a CLI (gppf-train, sbatch, torchrun...) and waits for it to finish."""
SLOW_DIST_MODULES = {
    "test_coupled_micro_batches",
    "test_expert_parallel_zero",
    "test_nonfinite_step",
    "test_simt_exactness",
    "test_step_device",
    "test_worker_teardown",
}
"""tests/dist modules whose ranks build a DeepSpeed engine (6-50 s a test on 2 cores); the
exchange and sharding tests without an engine stay fast (3-8 s)."""
SLOW_FIXTURES = {"demo_export", "demo_shards", "pool_runs"}
"""The demo pre-trained and exported through the CLIs; the demo's full-size corpus; whole
training runs on pooled workers (`tests/dist/run_pool.py`)."""


def is_slow(item: pytest.Item) -> bool:
    path = Path(str(item.fspath))
    return (
        path.parent.name in SLOW_FOLDERS
        or (path.parent.name == "dist" and path.stem in SLOW_DIST_MODULES)
        or bool(SLOW_FIXTURES & set(getattr(item, "fixturenames", ())))
    )


# `make test` runs each tier on 2 pytest-xdist workers (`--dist loadgroup`); what runs together:
SHARED_RESOURCES = {
    "test_cluster_slurm": "slurm-cluster",
    "test_cluster_slurm_two_nodes": "slurm-cluster",
    "test_export_cli": "demo-export",
    "test_finetune_cli": "demo-export",
}
"""Modules scheduled together: those using the local two-node Slurm cluster (a two-node job of
one module would otherwise queue behind the other's, and its timings with it), and those using
the session's `demo_export` (trained and exported once, not once per worker)."""


def schedule_group(nodeid: str) -> str:
    """The unit a test is scheduled with: its module (module fixtures, such as a reference run,
    are built once), or the shared resource its module uses."""
    module = nodeid.split("::", 1)[0]
    return SHARED_RESOURCES.get(Path(module).stem, module)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the slow tier before `-m` selects (tryfirst: ahead of pytest's own marker filter)."""
    for item in items:
        if is_slow(item):
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadgroup` schedules by `schedule_group`, decided here from node ids on the
    controller. (xdist's own `xdist_group` marks take effect by renaming node ids on the
    workers, which pytest 9.2 no longer honours: tests of one module ran on both workers.)"""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return schedule_group(nodeid)

    return ByGroup(config, log)


@pytest.fixture(scope="session")
def compose_run() -> Callable[..., RunConfig]:
    """compose_run(*overrides) -> RunConfig, through the real conf/ tree and schema."""
    register_schema()

    def _compose(*overrides: str) -> RunConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
            return to_run_config(compose("train", overrides=list(overrides)))

    return _compose


@pytest.fixture(scope="session")
def pool_runs(compose_run: Callable[..., RunConfig]) -> Iterator[PoolRuns]:
    """pool_runs.train(run_dir, shards, *overrides): a `gppf-train` run (the CLI's config and
    checks, then `run_worker` on every rank) on worker processes spawned once per session."""
    from tests.dist.run_pool import PoolRuns

    runs = PoolRuns(compose_run)
    yield runs
    runs.close()


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All 8 synthetic tasks: 4 train shards of 16 samples and 1 val shard each."""
    from gppf_dist.data.synth.corpus import write_synthetic_corpus

    root = tmp_path_factory.mktemp("shards")
    write_synthetic_corpus(root, samples_per_task=64, val_per_task=16, seed=0, samples_per_shard=16)
    return root


@pytest.fixture(scope="session")
def demo_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's own corpus (`gppf-shards synth` defaults), for checks stated on the demo."""
    from gppf_dist.data.synth.corpus import write_synthetic_corpus

    root = tmp_path_factory.mktemp("demo_shards")
    write_synthetic_corpus(root)
    return root


@pytest.fixture(scope="session")
def demo_export(tmp_path_factory: pytest.TempPathFactory, tiny_shards: Path) -> tuple[Path, Path]:
    """(run dir, export folder): the demo pre-trained 4 steps on `tiny_shards`, then
    `gppf-export`ed; both through the real CLIs."""
    import subprocess
    import sys

    tmp = tmp_path_factory.mktemp("demo_export")
    run_dir, out = tmp / "run", tmp / "release"
    bin_dir = Path(sys.executable).parent
    train = [
        str(bin_dir / "gppf-train"), "experiment=demo", f"run.dir={run_dir}",
        f"data.root={tiny_shards}", "logger=none", "trainer.progress=false",
        "trainer.max_steps=4", "trainer.checkpoint_every=4", "trainer.eval_at_start=false",
        "launcher.nproc=1",
    ]  # fmt: skip
    proc = subprocess.run(train, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    export = [str(bin_dir / "gppf-export"), f"run_dir={run_dir}", f"out={out}"]
    proc = subprocess.run(export, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "identical on every task" in proc.stdout
    return run_dir, out
