"""Expert parallelism through `gppf-train` itself: a run at ep_size=2 is, loss for loss, the run
the pooled workers make (`tests/dist/test_expert_parallel_runs.py` checks the numerics there),
and a ZeRO-2 checkpoint refuses another ZeRO stage before any worker starts (another world or EP
size it takes: `tests/dist/test_zero_world_free.py`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from gppf_dist.logging.metrics import read_metrics

from ..dist.run_pool import PoolRuns
from ..trajectories import assert_same_run, records
from .test_train_cli import run_train, train_cmd

STEPS = 5
COMMON = ("launcher.nproc=2", "trainer.eval_at_start=false")


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl")}


def test_the_cli_run_is_the_pooled_run(
    pool_runs: PoolRuns, demo_shards: Path, tmp_path: Path
) -> None:
    """The same run (`trajectories.py`), the EP locality measure too: the pooled workers' runs
    stand for the CLI's."""
    ep2 = ("parallel.ep_size=2", f"trainer.max_steps={STEPS}", *COMMON)
    run_train(tmp_path / "cli", demo_shards, *ep2)
    pool_runs.train(tmp_path / "pool", demo_shards, *ep2)
    cli, pooled = records(tmp_path / "cli"), records(tmp_path / "pool")
    assert sorted(cli) == sorted(pooled) == list(range(1, STEPS + 1))
    assert_same_run(cli, pooled)
    assert [r["ep/local_fraction"] for r in cli.values()] == [
        r["ep/local_fraction"] for r in pooled.values()
    ]


def test_zero2_checkpoint_refuses_another_stage(
    pool_runs: PoolRuns, demo_shards: Path, tmp_path: Path
) -> None:
    pool_runs.train(
        tmp_path, demo_shards, "parallel.zero_stage=2", "parallel.ep_size=2",
        f"trainer.max_steps={STEPS}", *COMMON,
    )  # fmt: skip
    refused = subprocess.run(
        train_cmd(
            tmp_path, demo_shards, "parallel.zero_stage=1", "parallel.ep_size=2",
            "trainer.max_steps=7", *COMMON,
        ),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "use `parallel.zero_stage`=2" in refused.stderr + refused.stdout
    assert sorted(losses(tmp_path)) == list(range(1, STEPS + 1))  # no step ran
