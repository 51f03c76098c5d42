"""Whole runs of the demo on the small corpus, on pooled workers (`run_pool.py`): the GPU-shaped
path (bf16, NHWC, recomputed legos) against fp32, and the run at 1 and 2 processes."""

from __future__ import annotations

from pathlib import Path

from gppf_dist.logging.metrics import read_metrics

from ..trajectories import assert_same_run, records
from .run_pool import PoolRuns


def losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl")]


def test_bf16_channels_last_checkpointed_run_trains(
    pool_runs: PoolRuns, tmp_path: Path, tiny_shards: Path
) -> None:
    """The GPU-shaped path end to end on CPU: bf16 inside the model's forward, NHWC weights,
    recomputed lego mixtures, prefetched batches; the fp32 run of the same data is the yardstick
    (bf16 rounding moves the losses a little, never far)."""
    common = ("launcher.nproc=2", "trainer.max_steps=4", "trainer.eval_at_start=false")
    pool_runs.train(tmp_path / "fp32", tiny_shards, *common)
    pool_runs.train(
        tmp_path / "bf16",
        tiny_shards,
        *common,
        "trainer.precision=bf16",
        "trainer.channels_last=true",
        "trainer.activation_checkpointing=true",
    )
    fp32, bf16 = losses(tmp_path / "fp32"), losses(tmp_path / "bf16")
    assert len(bf16) == len(fp32) == 4
    assert all(abs(b - f) < 0.05 * abs(f) for b, f in zip(bf16, fp32, strict=True))
    assert bf16 != fp32  # bf16 really ran


def test_world_size_does_not_change_the_losses(
    pool_runs: PoolRuns, tmp_path: Path, tiny_shards: Path
) -> None:
    for nproc in (1, 2):
        pool_runs.train(
            tmp_path / f"n{nproc}",
            tiny_shards,
            f"launcher.nproc={nproc}",
            "trainer.max_steps=3",
            "trainer.eval_at_start=false",
        )
    one, two = records(tmp_path / "n1"), records(tmp_path / "n2")
    assert sorted(one) == sorted(two) == [1, 2, 3]
    assert_same_run(one, two)
