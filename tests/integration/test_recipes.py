"""The real-run recipes: their dry runs at 64 and 512 ranks on this CPU (plan, memory plan, the
JSON line) before the corpus exists, and 2 training steps of each at `+scale=smoke`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gppf_dist.logging.metrics import read_metrics

TRAIN = str(Path(sys.executable).parent / "gppf-train")
RECIPES = ("gppf15m_r50", "gppf15m_vitb16")


@pytest.mark.parametrize("world", [64, 512])
@pytest.mark.parametrize("recipe", RECIPES)
def test_the_recipe_dry_run_fits_and_balances(recipe: str, world: int, tmp_path: Path) -> None:
    root = tmp_path / "no_corpus_yet"
    cmd = [TRAIN, f"experiment={recipe}", "simt.dry_run=true", f"launcher.nproc={world}",
           f"data.root={root}", f"run.dir={tmp_path / 'run'}", "logger=none"]  # fmt: skip
    start = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    took = time.monotonic() - start
    assert out.returncode == 0, out.stderr[-3000:]
    assert "data.spec='gppf15m'" in out.stdout  # planned from the spec: no corpus here
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["world"] == world
    assert summary["idle_ranks"] == 0
    assert summary["efficiency"] >= 0.95
    assert 0 < summary["peak_mem_gib_max"] <= 80
    caps = summary["max_local_batch"]
    assert set(caps) == {"cls_object", "cls_scene", "det", "seg", "pose", "reid", "face", "attr"}
    assert caps["det"] < caps["cls_object"]  # 800 px against 224 px
    assert f"rank {world - 1}: load" in out.stdout and "peak " in out.stdout
    assert not (tmp_path / "run" / "config.yaml").exists()  # no worker was started
    assert took < 120, took  # within 60 s on a quiet machine; tests share the 2 cores


@pytest.mark.parametrize("recipe", RECIPES)
def test_the_recipe_trains_at_smoke_scale(recipe: str, tiny_shards: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cmd = [TRAIN, f"experiment={recipe}", "+scale=smoke", f"data.root={tiny_shards}",
           f"run.dir={run_dir}", "logger=none", "trainer.progress=false",
           "launcher.nproc=1"]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "memory plan for 1 GiB devices" in out.stdout
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2]
    assert all(f"loss/{t}" in records[-1] for t in ("det", "seg", "face", "reid"))
    evals = json.loads((run_dir / "eval.json").read_text())
    assert len(evals["tasks"]) == 8
    saved = (run_dir / "config.yaml").read_text()
    assert f"experiment: {recipe}" in saved and "precision: bf16" in saved
