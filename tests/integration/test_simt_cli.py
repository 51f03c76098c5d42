"""SIMT through `gppf-train` itself on the demo corpus: a run at 3 processes is, loss for loss,
the run the pooled workers make (where `tests/dist/test_simt_runs.py` checks world-size
invariance and exact resume), and the dry run's plan at 3, 64 and 128 ranks."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ..dist.run_pool import PoolRuns
from ..trajectories import assert_same_run, records
from .test_train_cli import run_train, train_cmd

COMMON = ("trainer.eval_at_start=false", "trainer.seed=7")


def test_the_cli_run_at_3_processes_is_the_pooled_run(
    pool_runs: PoolRuns, demo_shards: Path, tmp_path: Path
) -> None:
    """The same run (`trajectories.py`): the pooled workers' runs stand for the CLI's."""
    args = ("launcher.nproc=3", "trainer.max_steps=4", *COMMON)
    run_train(tmp_path / "cli", demo_shards, *args)
    pool_runs.train(tmp_path / "pool", demo_shards, *args)
    cli, pooled = records(tmp_path / "cli"), records(tmp_path / "pool")
    assert sorted(cli) == sorted(pooled) == [1, 2, 3, 4]
    assert_same_run(cli, pooled)


def test_dry_run_prints_the_plan_and_starts_nothing(demo_shards: Path, tmp_path: Path) -> None:
    cmd = train_cmd(
        tmp_path / "run",
        demo_shards,
        "launcher.nproc=3",
        "simt.dry_run=true",
        "simt.tasks.det.cost=10",
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "rank 2:" in proc.stdout and "predicted balance efficiency" in proc.stdout
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_dry_run_at_64_ranks_leaves_no_rank_idle(demo_shards: Path, tmp_path: Path) -> None:
    """104 samples per step over 64 ranks: with work divisible to the sample, every rank has
    some (the stream-level planner left ranks 32-63 idle)."""
    cmd = train_cmd(tmp_path / "run", demo_shards, "launcher.nproc=64", "simt.dry_run=true")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "rank 63:" in proc.stdout and "(idle" not in proc.stdout
    assert "idle ranks: 0;" in proc.stdout


def test_dry_run_says_why_ranks_idle_and_the_load_unit(demo_shards: Path, tmp_path: Path) -> None:
    """128 ranks for 92 indivisible pieces (re-ID's triplet loss keeps its groups of 4 together):
    36 idle ranks, and the plan says so and in what unit the loads are (cost hints here)."""
    cmd = train_cmd(tmp_path / "run", demo_shards, "launcher.nproc=128", "simt.dry_run=true")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "load = predicted compute per step in cost units: samples x simt.tasks.<task>.cost" in (
        proc.stdout
    )
    assert "rank 127: load 0.0  (idle: see below)" in proc.stdout
    assert (
        "idle ranks: 36 because fewer samples than ranks (92 indivisible pieces for 128 ranks; "
        "samples a loss couples go together: reid in groups of 4)" in proc.stdout
    )
