"""The paper's baselines as configs: single-task demo runs and the dense multi-task demo."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gppf_dist.config.schema import RunConfig
from gppf_dist.logging.metrics import read_metrics

TRAIN = str(Path(sys.executable).parent / "gppf-train")
EXPERIMENTS = Path(__file__).resolve().parents[2] / "conf" / "experiment"
DEMO_TASKS = ["attr", "cls_object", "cls_scene", "det", "face", "pose", "reid", "seg"]


def test_there_is_one_single_task_config_per_demo_task(
    compose_run: Callable[..., RunConfig],
) -> None:
    singles = sorted(p.stem.removeprefix("single_") for p in EXPERIMENTS.glob("single_*.yaml"))
    assert singles == sorted(compose_run("experiment=demo").simt.active_tasks()) == DEMO_TASKS


@pytest.mark.parametrize("task", DEMO_TASKS)
def test_single_task_config_is_the_demo_on_one_task(
    compose_run: Callable[..., RunConfig], task: str
) -> None:
    demo, single = compose_run("experiment=demo"), compose_run(f"experiment=single_{task}")
    assert list(single.simt.active_tasks()) == [task]
    assert single.experiment == f"single_{task}" and single.run.name == f"single_{task}"
    assert single.model == demo.model and single.trainer == demo.trainer
    assert single.simt.tasks == demo.simt.tasks  # the task's batch, size and weight unchanged


def test_demo_dense_is_the_demo_with_the_dense_model(
    compose_run: Callable[..., RunConfig],
) -> None:
    demo, dense = compose_run("experiment=demo"), compose_run("experiment=demo_dense")
    assert dense.model.name == "gppf_r50_tiny_dense"
    assert dense.model.num_legos == dense.model.top_k
    assert list(dense.simt.active_tasks()) == DEMO_TASKS
    assert dense.trainer == demo.trainer and dense.run.name == "demo_dense"


def test_single_task_run_trains_only_its_task(tiny_shards: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cmd = [
        TRAIN,
        "experiment=single_cls_object",
        "launcher.nproc=1",
        "trainer.max_steps=2",
        "logger=none",
        "trainer.eval_at_start=false",
        "trainer.progress=false",
        f"data.root={tiny_shards}",
        f"run.dir={run_dir}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2]
    task_losses = {k for r in records for k in r if k.startswith("loss/")} - {"loss/router_reg"}
    assert task_losses == {"loss/cls_object"}
    evals = json.loads((run_dir / "eval.json").read_text())
    assert list(evals["tasks"]) == ["cls_object"] and "top1" in evals["tasks"]["cls_object"]
