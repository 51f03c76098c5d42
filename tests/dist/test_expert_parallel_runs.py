"""Expert-parallel legos through whole demo runs on pooled workers (`run_pool.py`): the run at
ep_size=2 is the run at ep_size=1 (objective, task losses and gradient norm; `trajectories.py`
says how strictly), resumable across EP sizes; the same under DeepSpeed ZeRO 1/2 (their resumes at another world or
EP size: `test_zero_world_free.py`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gppf_dist.logging.metrics import read_metrics

from ..trajectories import assert_same_run, records
from .run_pool import PoolRuns

STEPS = 5
COMMON = ("launcher.nproc=2", "trainer.eval_at_start=false")


def straight_runs(
    pool_runs: PoolRuns, factory: pytest.TempPathFactory, shards: Path, zero: int
) -> dict[int, Path]:
    """Uninterrupted runs at ep_size 1 and 2 under ZeRO `zero`."""
    out = {}
    for ep in (1, 2):
        out[ep] = factory.mktemp(f"zero{zero}_ep{ep}")
        pool_runs.train(
            out[ep],
            shards,
            f"parallel.zero_stage={zero}",
            f"parallel.ep_size={ep}",
            f"trainer.max_steps={STEPS}",
            *COMMON,
        )
    return out


def assert_same_losses_and_norms(one: Path, two: Path) -> None:
    """The same run, task losses and gradient norms included. Clipping must count every
    parameter once: the global gradient norm is the same at any EP size."""
    a, b = records(one), records(two)
    assert sorted(a) == sorted(b) == list(range(1, STEPS + 1))
    assert all(r["grad_norm"] > 0 for r in a.values()), a
    assert_same_run(a, b)


@pytest.fixture(scope="module")
def straight(
    pool_runs: PoolRuns, tmp_path_factory: pytest.TempPathFactory, demo_shards: Path
) -> dict[int, Path]:
    return straight_runs(pool_runs, tmp_path_factory, demo_shards, 0)


def test_ep2_gives_the_losses_and_gradient_norms_of_ep1(straight: dict[int, Path]) -> None:
    assert_same_losses_and_norms(straight[1], straight[2])
    records = read_metrics(straight[2] / "metrics.jsonl")
    assert all(0 <= r["ep/local_fraction"] <= 1 for r in records)


@pytest.mark.parametrize(("save_ep", "resume_ep"), [(2, 1), (1, 2)])
def test_resume_across_ep_sizes(
    pool_runs: PoolRuns,
    straight: dict[int, Path],
    demo_shards: Path,
    tmp_path: Path,
    save_ep: int,
    resume_ep: int,
) -> None:
    pool_runs.train(
        tmp_path, demo_shards, f"parallel.ep_size={save_ep}", "trainer.max_steps=3", *COMMON
    )
    pool_runs.train(
        tmp_path,
        demo_shards,
        f"parallel.ep_size={resume_ep}",
        f"trainer.max_steps={STEPS}",
        *COMMON,
    )
    # Up to step 3 this is the straight run at `save_ep`; from the restored state on, the run
    # at `resume_ep` must be that run.
    resumed = records(tmp_path)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    assert_same_run(records(straight[save_ep]), resumed, anchor=4)


@pytest.fixture(scope="module")
def zero1(
    pool_runs: PoolRuns, tmp_path_factory: pytest.TempPathFactory, demo_shards: Path
) -> dict[int, Path]:
    return straight_runs(pool_runs, tmp_path_factory, demo_shards, 1)


def test_zero1_ep2_gives_the_losses_and_gradient_norms_of_ep1(zero1: dict[int, Path]) -> None:
    assert_same_losses_and_norms(zero1[1], zero1[2])  # norms: DeepSpeed's, legos counted in


def test_zero2_ep2_resumes_at_its_split(
    pool_runs: PoolRuns, zero1: dict[int, Path], demo_shards: Path, tmp_path: Path
) -> None:
    zero2 = ("parallel.zero_stage=2", "parallel.ep_size=2", *COMMON)
    pool_runs.train(tmp_path, demo_shards, *zero2, "trainer.max_steps=3")
    pool_runs.train(tmp_path, demo_shards, *zero2, f"trainer.max_steps={STEPS}")
    resumed = records(tmp_path)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    assert_same_run(records(zero1[2]), resumed)  # ZeRO 1 and 2 give the same update


def test_placement_from_frozen_routes_keeps_the_losses(
    pool_runs: PoolRuns, demo_shards: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Resuming with frozen routes re-places the legos (parallel.place_legos; on the demo's
    routes the contiguous split predicts best and stays; test_expert_parallel.py covers a
    moved placement): the losses are those of the uninterrupted run."""
    frozen = ("parallel.ep_size=2", "model.router.freeze_after=2", *COMMON)
    straight, resumed = tmp_path_factory.mktemp("frozen"), tmp_path_factory.mktemp("placed")
    pool_runs.train(straight, demo_shards, *frozen, f"trainer.max_steps={STEPS}")
    pool_runs.train(resumed, demo_shards, *frozen, "trainer.max_steps=3")
    run = pool_runs.train(resumed, demo_shards, *frozen, f"trainer.max_steps={STEPS}")
    line = next(x for x in run.stdout.splitlines() if "lego placement from frozen routes" in x)
    placed = json.loads(line.split(": ", 1)[1].split(";")[0])
    assert len(placed) == 4 and all(sorted(layer) == [0, 0, 1, 1] for layer in placed)
    assert_same_run(records(straight), records(resumed), anchor=4)
