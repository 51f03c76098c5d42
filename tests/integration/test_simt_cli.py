"""Issue-level SIMT properties, checked through `gppf-train` end to end.

World-size invariance: the same config and seed give the same per-step objective at 1, 2 and 3
processes. Exact resume: stopping at step 3 and resuming gives the uninterrupted losses, at the
same process count bit for bit, at another process count within 1e-4.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gppf_dist.logging.metrics import read_metrics

from .test_train_cli import run_train

STEPS = 6
COMMON = ("trainer.eval_at_start=false", "trainer.seed=7")


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl")}


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory, tiny_shards: Path) -> dict[int, Path]:
    """Uninterrupted runs of STEPS steps at 1, 2 and 3 processes."""
    out = {}
    for nproc in (1, 2, 3):
        run_dir = tmp_path_factory.mktemp(f"straight{nproc}")
        run_train(
            run_dir, tiny_shards, f"launcher.nproc={nproc}", f"trainer.max_steps={STEPS}", *COMMON
        )
        out[nproc] = run_dir
    return out


def test_losses_do_not_depend_on_world_size(straight: dict[int, Path]) -> None:
    ref = losses(straight[1])
    assert sorted(ref) == list(range(1, STEPS + 1))
    for nproc in (2, 3):
        other = losses(straight[nproc])
        for step, value in ref.items():
            assert abs(other[step] - value) <= 1e-4 * abs(value), (nproc, step, value, other[step])
    records = read_metrics(straight[3] / "metrics.jsonl")
    assert all(0 < r["balance_efficiency"] <= 1 for r in records)
    assert all(f"busy_s/rank{r}" in records[0] for r in range(3))


def test_decode_workers_do_not_change_the_losses(
    straight: dict[int, Path], tiny_shards: Path, tmp_path: Path
) -> None:
    run_train(
        tmp_path,
        tiny_shards,
        "launcher.nproc=2",
        "data.num_workers=2",
        f"trainer.max_steps={STEPS}",
        *COMMON,
    )
    assert losses(tmp_path) == losses(straight[2])


@pytest.mark.parametrize("resume_nproc", [2, 3, 1])
def test_resume_gives_the_uninterrupted_losses(
    straight: dict[int, Path], tiny_shards: Path, tmp_path: Path, resume_nproc: int
) -> None:
    run_dir = tmp_path / "run"
    run_train(run_dir, tiny_shards, "launcher.nproc=2", "trainer.max_steps=3", *COMMON)
    run_train(
        run_dir,
        tiny_shards,
        f"launcher.nproc={resume_nproc}",
        f"trainer.max_steps={STEPS}",
        *COMMON,
    )
    resumed, ref = losses(run_dir), losses(straight[2])
    assert sorted(resumed) == list(range(1, STEPS + 1))
    for step in range(4, STEPS + 1):
        if resume_nproc == 2:
            assert resumed[step] == ref[step], (step, resumed[step], ref[step])
        else:
            assert abs(resumed[step] - ref[step]) <= 1e-4 * abs(ref[step])


def test_dry_run_prints_the_plan_and_starts_nothing(tiny_shards: Path, tmp_path: Path) -> None:
    import subprocess

    from .test_train_cli import train_cmd

    cmd = train_cmd(
        tmp_path / "run",
        tiny_shards,
        "launcher.nproc=3",
        "simt.dry_run=true",
        "simt.tasks.det.cost=10",
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "rank 2:" in proc.stdout and "predicted balance efficiency" in proc.stdout
    assert not (tmp_path / "run" / "config.yaml").exists()
