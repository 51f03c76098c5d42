"""A real `gppf-train` run on detection shards whose every sample holds a box the geometry makes
degenerate: every sample is trained on (`data/skipped/det` stays 0) and the dropped boxes are
counted in the metrics (`data/dropped/det`)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from gppf_dist.data.format.manifest import Manifest, TaskManifest, save_manifest
from gppf_dist.data.format.writer import ShardWriter
from gppf_dist.logging.metrics import read_metrics

from .test_train_cli import run_train

W, H = 200, 120
BIG = [40.0, 20.0, 160.0, 100.0]
SLIVER = [100.0, 50.0, 101.5, 80.0]
"""1.5 px wide: under 1 px once 200 px are resized to the demo's 96, so always dropped."""


def _jpeg(i: int) -> bytes:
    pixels = np.random.default_rng(i).integers(0, 256, (H, W, 3), dtype=np.uint8)
    pixels[20:100, 40:160] = (200, 40, 40)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_a_degenerate_box_costs_the_box_not_the_sample(tmp_path: Path) -> None:
    root = tmp_path / "shards"
    task = TaskManifest("det", "detection", "toy", {"classes": ["thing", "sliver"]})
    for split, n in (("train", 16), ("val", 4)):
        with ShardWriter(root, "det", split, "toy", samples_per_shard=8) as writer:
            for i in range(n):
                ann = {"width": W, "height": H, "boxes": [BIG, SLIVER], "labels": [0, 1]}
                writer.write(f"{split}{i:03d}", {"jpg": _jpeg(i), "json": json.dumps(ann).encode()})
        task.splits[split] = writer.close()
    save_manifest(root, Manifest(tasks={"det": task}))
    run_dir = tmp_path / "run"
    run_train(
        run_dir, root, "simt.only=[det]", "launcher.nproc=1", "trainer.max_steps=3",
        "trainer.eval_at_start=false", "trainer.checkpoint_every=3",
    )  # fmt: skip
    last = read_metrics(run_dir / "metrics.jsonl")[-1]
    assert last["data/skipped/det"] == 0
    assert last["data/dropped/det"] >= 3 * 8  # one sliver per sample, 8 samples per step
