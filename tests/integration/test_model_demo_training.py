"""The CPU demo trains with the tiny model of each family: every task's metric beats step 0.

Runs `gppf-train experiment=demo model=<tiny model>` for 60 steps on one worker over a synthetic
corpus with enough validation samples for the retrieval metrics (re-ID needs same-identity pairs
across cameras, face verification needs positive pairs), then compares `eval.json`'s final
`tasks` metrics with its `start` (step 0) metrics. About 1.5 minutes per family on 2 cores.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from gppf_dist.config.load import load_run_config
from gppf_dist.tasks.registry import get_task_type

TRAIN = str(Path(sys.executable).parent / "gppf-train")
STEPS = 60


@pytest.fixture(scope="module")
def demo_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gppf_dist.data.synth.corpus import write_synthetic_corpus

    root = tmp_path_factory.mktemp("demo_shards")
    write_synthetic_corpus(
        root, samples_per_task=256, val_per_task=64, seed=0, samples_per_shard=32
    )
    return root


@pytest.mark.parametrize("model", ["gppf_vit_tiny", "gppf_r50_tiny"])
def test_demo_improves_every_task(tmp_path: Path, demo_corpus: Path, model: str) -> None:
    run_dir = tmp_path / "run"
    cmd = [
        TRAIN,
        "experiment=demo",
        f"model={model}",
        f"run.dir={run_dir}",
        f"data.root={demo_corpus}",
        "logger=none",
        "trainer.progress=false",
        f"trainer.max_steps={STEPS}",
        f"trainer.checkpoint_every={STEPS}",
        "launcher.nproc=1",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    config = (run_dir / "config.yaml").read_text()
    assert f"name: {model}" in config
    evals = json.loads((run_dir / "eval.json").read_text())
    assert evals["step"] == STEPS
    types = _task_types(run_dir)
    worse = {}
    for task, type_name in types.items():
        task_type = get_task_type(type_name)
        key = task_type.primary_metric
        start, end = evals["start"][task][key], evals["tasks"][task][key]
        assert math.isfinite(start) and math.isfinite(end), (task, key, start, end)
        better = end > start if task_type.higher_is_better else end < start
        if not better:
            worse[task] = (key, start, end)
    assert not worse, f"{model}: no improvement over step 0 for {worse}"


def _task_types(run_dir: Path) -> dict[str, str]:
    """Task name → task type, from the run's saved config."""
    cfg = load_run_config(run_dir / "config.yaml")
    return {name: t.type for name, t in cfg.simt.active_tasks().items()}
