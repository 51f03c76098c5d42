"""Expert-parallel legos end to end, on the demo corpus: the losses of ep_size=1 (relative
difference <= 1e-4 over the demo's first steps), resumable across EP sizes."""

from __future__ import annotations

from pathlib import Path

import pytest

from gppf_dist.logging.metrics import read_metrics

from .test_train_cli import run_train

STEPS = 5
COMMON = ("launcher.nproc=2", "trainer.eval_at_start=false")


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl")}


def close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-4 * abs(b)


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory, demo_shards: Path) -> dict[int, Path]:
    out = {}
    for ep in (1, 2):
        run_dir = tmp_path_factory.mktemp(f"ep{ep}")
        run_train(
            run_dir, demo_shards, f"parallel.ep_size={ep}", f"trainer.max_steps={STEPS}", *COMMON
        )
        out[ep] = run_dir
    return out


def test_ep2_gives_the_losses_and_gradient_norms_of_ep1(straight: dict[int, Path]) -> None:
    one, two = losses(straight[1]), losses(straight[2])
    assert sorted(one) == sorted(two) == list(range(1, STEPS + 1))
    for step in one:
        assert close(two[step], one[step]), (step, one[step], two[step])
    # Clipping must count every parameter once: the global norm is the same at any EP size.
    norms = [[r["grad_norm"] for r in read_metrics(straight[e] / "metrics.jsonl")] for e in (1, 2)]
    for a, b in zip(*norms, strict=True):
        assert close(b, a), norms
    records = read_metrics(straight[2] / "metrics.jsonl")
    assert all(0 <= r["ep/local_fraction"] <= 1 for r in records)


@pytest.mark.parametrize(("save_ep", "resume_ep"), [(2, 1), (1, 2)])
def test_resume_across_ep_sizes(
    straight: dict[int, Path], demo_shards: Path, tmp_path: Path, save_ep: int, resume_ep: int
) -> None:
    run_train(tmp_path, demo_shards, f"parallel.ep_size={save_ep}", "trainer.max_steps=3", *COMMON)
    run_train(
        tmp_path,
        demo_shards,
        f"parallel.ep_size={resume_ep}",
        f"trainer.max_steps={STEPS}",
        *COMMON,
    )
    resumed, ref = losses(tmp_path), losses(straight[1])
    assert sorted(resumed) == list(range(1, STEPS + 1))
    for step in range(4, STEPS + 1):
        assert close(resumed[step], ref[step]), (step, resumed[step], ref[step])
