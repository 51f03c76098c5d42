"""A worker that fails mid-run still closes what it opened, once: its loaders (and their decode
processes), the metrics file and the process group."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gppf_dist.config.schema import RunConfig

from .harness import run_distributed


def _failing_worker(cfg: RunConfig, fail_at: int) -> dict[str, Any]:
    import multiprocessing

    import torch.distributed as dist

    from gppf_dist.engine import worker

    real = worker.run_iteration
    calls = []

    def run_iteration(*args: Any) -> Any:
        calls.append(1)
        if len(calls) > fail_at:
            raise RuntimeError("injected fault in the step")
        return real(*args)

    worker.run_iteration = run_iteration  # type: ignore[assignment]
    try:
        worker.run_worker(cfg)
        error = ""
    except RuntimeError as err:
        error = str(err)
    return {
        "error": error,
        "initialized": dist.is_initialized(),
        "children": [p.name for p in multiprocessing.active_children()],
    }


def _config(compose_run: Any, shards: Path, run_dir: Path, *overrides: str) -> RunConfig:
    run_dir.mkdir()
    return compose_run(
        "experiment=demo",
        f"data.root={shards}",
        f"run.dir={run_dir}",
        "logger=none",
        "trainer.progress=false",
        "trainer.eval_at_start=false",
        *overrides,
    )


def test_a_failing_step_still_closes_loaders_metrics_and_process_group(
    compose_run: Any, tiny_shards: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    cfg = _config(compose_run, tiny_shards, run_dir, "trainer.max_steps=4", "data.num_workers=1")
    (result,) = run_distributed(_failing_worker, 1, cfg, 1)
    assert result["error"] == "injected fault in the step"
    assert not result["initialized"]
    assert result["children"] == []  # the loaders' decode processes were stopped
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1  # step 1 was written and flushed before the fault


def test_a_fault_in_the_first_step_is_raised_and_nothing_is_left_open(
    compose_run: Any, tiny_shards: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    cfg = _config(compose_run, tiny_shards, run_dir, "trainer.max_steps=2")
    (result,) = run_distributed(_failing_worker, 1, cfg, 0)
    assert result["error"] == "injected fault in the step" and not result["initialized"]
    assert not (run_dir / "checkpoints").exists() or not any((run_dir / "checkpoints").iterdir())
