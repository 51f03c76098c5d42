"""No valid sample is lost to the geometry: a box it makes degenerate is dropped and counted,
a keypoint it moves out of the input becomes invisible and is counted; the sample is kept.

The shards are real: JPEGs and JSON written by `ShardWriter`, read back through the data layer.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gppf_dist.data.decode.sample import SkipCounter
from gppf_dist.data.format.manifest import Manifest, TaskManifest
from gppf_dist.data.format.writer import ShardWriter
from gppf_dist.data.load.loader import TaskLoader
from gppf_dist.data.load.pipeline import SampleContext, load_shard_samples, prepare_sample
from gppf_dist.tasks.base import Sample
from gppf_dist.tasks.registry import get_task_type, make_spec

SPEC = make_spec("det", "detection", (64, 64), {"classes": ["thing", "edge"]})
W, H = 200, 120
BIG = [40.0, 20.0, 160.0, 100.0]
EDGE = [194.0, 1.0, 199.0, 7.0]
"""5x6 px in the top right corner: a random crop of side >= 0.8 cuts it off for many seeds
(an augmentation library used before rejected the whole sample over such a box)."""
SLIVER = [100.0, 50.0, 101.5, 80.0]
"""1.5 px wide: under 1 px once 200 px are resized to 64, so even evaluation drops it."""


def _jpeg(i: int) -> bytes:
    rng = np.random.default_rng(i)
    pixels = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    pixels[20:100, 40:160] = (200, 40, 40)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def det_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    root = tmp_path_factory.mktemp("det")
    with ShardWriter(root, "det", "train", "toy", samples_per_shard=8) as writer:
        for i in range(8):
            ann = {"width": W, "height": H, "boxes": [BIG, EDGE, SLIVER], "labels": [0, 1, 1]}
            writer.write(f"s{i:03d}", {"jpg": _jpeg(i), "json": json.dumps(ann).encode()})
    task = TaskManifest("det", "detection", "toy", {"classes": ["thing", "edge"]})
    task.splits["train"] = writer.close()
    return root, Manifest(tasks={"det": task})


def _context(root: Path, train: bool) -> SampleContext:
    return SampleContext(
        root=root,
        task="det",
        spec=SPEC,
        task_type=get_task_type("detection"),
        seed=0,
        train=train,
        needs_mask=False,
        skips=SkipCounter("det"),
    )


@pytest.mark.parametrize("train", [False, True])
def test_degenerate_boxes_are_dropped_and_counted_the_samples_kept(
    det_root: tuple[Path, Manifest], train: bool
) -> None:
    root, manifest = det_root
    ctx = _context(root, train)
    raws = load_shard_samples(ctx, manifest.task("det").shards("train")[0])
    kept_boxes = 0
    for epoch in range(4):
        for index, raw in enumerate(raws):
            item = prepare_sample(ctx, raw, (0, epoch, index), f"#{index}")
            assert item is not None, ctx.skips.counts
            _, image, target = item
            assert image.shape == (3, 64, 64)
            labels = target["labels"].tolist()
            assert labels[0] == 0  # the big box always survives
            kept_boxes += len(labels)
    samples = 4 * len(raws)
    assert ctx.skips.counts == {}  # no sample skipped
    assert ctx.skips.dropped == {"boxes": 3 * samples - kept_boxes}
    if train:  # the crop cut the corner box off in some samples and kept it in others
        assert samples < 3 * samples - kept_boxes < 2 * samples
    else:  # evaluation: the resize alone makes the sliver degenerate, the corner box survives
        assert ctx.skips.dropped == {"boxes": samples}


def test_loader_keeps_every_sample(det_root: tuple[Path, Manifest]) -> None:
    root, manifest = det_root
    loader = TaskLoader(
        root=root,
        manifest=manifest,
        task="det",
        spec=SPEC,
        task_type=get_task_type("detection"),
        num_streams=1,
        stream_ids=[0],
        per_stream_batch=8,
        seed=0,
    )
    keys = [k for _ in range(3) for k in next(loader).keys]
    assert sorted(keys) == sorted([f"s{i:03d}" for i in range(8)] * 3)
    assert loader.skipped == {}


def test_pose_keypoints_leaving_the_input_become_invisible_and_counted() -> None:
    spec = make_spec("pose", "pose", (64, 48), {"keypoints": ["nose", "left_eye", "right_eye"]})
    image = np.zeros((100, 100, 3), np.uint8)
    # the person box is tiny, so a keypoint far from it lies outside the crop window
    ann = {"box": [40, 40, 60, 70], "keypoints": [[50, 50, 2], [95, 5, 2], [2, 98, 0]]}
    sample = Sample(key="p", image=image, ann=ann)
    _, target = get_task_type("pose").prepare(sample, spec, False, np.random.default_rng(0))
    assert target["keypoints"][:, 2].tolist() == [2, 0, 0]
    assert sample.dropped == {"keypoints": 1}  # the invisible one was never visible
