"""A task type of one's own, in one file (tests/plugins/brightness.py), trained with SIMT beside a
built-in type through `gppf-train` with `plugins=[...]` and no other file edited."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from gppf_dist.data.format.manifest import TaskManifest, save_manifest
from gppf_dist.data.format.writer import ShardWriter
from gppf_dist.data.synth.corpus import write_synthetic_corpus
from gppf_dist.logging.metrics import read_metrics

from .test_train_cli import run_train

PLUGIN = Path(__file__).resolve().parents[1] / "plugins" / "brightness.py"
BANDS = ["dark", "dim", "bright"]


def brightness_sample(rng: np.random.Generator, size: tuple[int, int]) -> dict[str, bytes]:
    """A grey image with noise, and its mean grey value / 255 as the annotation."""
    h, w = size
    level = rng.uniform(20, 235)
    pixels = np.clip(rng.normal(level, 12, (h, w, 1)), 0, 255).astype(np.uint8).repeat(3, -1)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    ann = {"width": w, "height": h, "brightness": round(float(pixels.mean()) / 255, 4)}
    return {"jpg": buf.getvalue(), "json": json.dumps(ann).encode()}


def write_corpus(root: Path) -> None:
    """The synthetic `cls_object` task and a `bright` task of the plugin's type, in one root."""
    manifest = write_synthetic_corpus(
        root, samples_per_task=16, val_per_task=8, samples_per_shard=8, tasks=["cls_object"]
    )
    task = TaskManifest("bright", "brightness", "grey", {"bands": BANDS}, {})
    rng = np.random.default_rng(0)
    for split, count in (("train", 16), ("val", 8)):
        with ShardWriter(root, "bright", split, "grey", samples_per_shard=8) as writer:
            for i in range(count):
                writer.write(f"bright_{split}_{i:04d}", brightness_sample(rng, (40, 48)))
        task.splits[split] = writer.close()
    manifest.tasks["bright"] = task
    save_manifest(root, manifest)


def test_a_task_type_of_ones_own_trains_with_simt(tmp_path: Path) -> None:
    shards, run_dir = tmp_path / "shards", tmp_path / "run"
    write_corpus(shards)
    run_train(
        run_dir,
        shards,
        f"plugins=[{PLUGIN}]",
        "+simt.tasks.bright={type:brightness,batch_size:4,input_size:[32,32]}",
        "simt.only=[cls_object,bright]",
        "launcher.nproc=2",
        "trainer.max_steps=2",
        "trainer.eval_at_start=false",
        "trainer.checkpoint_every=100",
    )
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        assert math.isfinite(r["loss/bright"]) and math.isfinite(r["loss/cls_object"]), r
    evals = json.loads((run_dir / "eval.json").read_text())
    assert sorted(evals["tasks"]) == ["bright", "cls_object"]


def test_gppf_shards_verifies_and_draws_a_task_of_ones_own(tmp_path: Path) -> None:
    shards = tmp_path / "shards"
    write_corpus(shards)
    tool = str(Path(sys.executable).parent / "gppf-shards")
    without = subprocess.run([tool, "verify", str(shards)], capture_output=True, text=True)
    assert without.returncode == 2 and "'brightness' is unknown" in without.stderr
    verify = subprocess.run(
        [tool, "--plugin", str(PLUGIN), "verify", str(shards)], capture_output=True, text=True
    )
    assert verify.returncode == 0, verify.stdout[-2000:] + verify.stderr[-2000:]
    assert "bright" in verify.stdout
    grid = tmp_path / "grid.png"
    cmd = [tool, "--plugin", str(PLUGIN), "inspect", str(shards), "--task", "bright"]
    drawn = subprocess.run([*cmd, "--out", str(grid)], capture_output=True, text=True)
    assert drawn.returncode == 0, drawn.stderr[-2000:]
    assert Image.open(grid).size[0] > 0
