"""The synthetic corpus: determinism, completeness and per-task annotation schemas."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from gppf_dist.cli.shards import main as shards_main
from gppf_dist.data.format.manifest import load_manifest
from gppf_dist.data.synth.corpus import SYNTH_TASKS, generate_sample, write_synthetic_corpus

TASK_TYPES = {
    "cls_object": "classification",
    "cls_scene": "classification",
    "det": "detection",
    "seg": "segmentation",
    "pose": "pose",
    "reid": "reid",
    "face": "face",
    "attr": "attributes",
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    write_synthetic_corpus(out, samples_per_task=24, val_per_task=8, seed=3, samples_per_shard=8)
    return out


def test_writes_all_tasks_with_valid_manifest(corpus: Path) -> None:
    manifest = load_manifest(corpus)
    assert {n: t.type for n, t in manifest.tasks.items()} == TASK_TYPES
    for tm in manifest.tasks.values():
        assert [s.samples for s in tm.splits["train"]] == [8, 8, 8]
        assert [s.samples for s in tm.splits["val"]] == [8]


def test_same_seed_same_bytes(corpus: Path, tmp_path: Path) -> None:
    again = write_synthetic_corpus(
        tmp_path, samples_per_task=24, val_per_task=8, seed=3, samples_per_shard=8
    )
    other = write_synthetic_corpus(
        tmp_path / "other", samples_per_task=24, val_per_task=8, seed=4, samples_per_shard=8
    )
    first = load_manifest(corpus)
    for name, tm in again.tasks.items():
        for split, shards in tm.splits.items():
            for a, b in zip(shards, first.tasks[name].splits[split], strict=True):
                assert (tmp_path / a.path).read_bytes() == (corpus / b.path).read_bytes()
    assert (
        other.tasks["det"].splits["train"][0].sha256 != again.tasks["det"].splits["train"][0].sha256
    )


def _samples(corpus: Path, task: str) -> list[dict]:
    urls = [str(p) for p in sorted((corpus / task / "train").glob("*.tar"))]
    return list(wds.WebDataset(urls, shardshuffle=False))


@pytest.mark.parametrize("task", list(TASK_TYPES))
def test_annotation_schema(corpus: Path, task: str) -> None:
    space = load_manifest(corpus).tasks[task].label_space
    samples = _samples(corpus, task)
    assert len(samples) == 24
    for s in samples:
        assert "." not in s["__key__"]
        img = Image.open(io.BytesIO(s["jpg"]))
        assert img.format == "JPEG" and img.mode == "RGB"
        ann = json.loads(s["json"])
        assert (ann["width"], ann["height"]) == img.size
        kind = TASK_TYPES[task]
        if kind == "classification":
            assert 0 <= ann["label"] < len(space["classes"])
            assert int(s["cls"]) == ann["label"]
        elif kind == "detection":
            assert len(ann["boxes"]) == len(ann["labels"]) >= 1
            for (x1, y1, x2, y2), label in zip(ann["boxes"], ann["labels"], strict=True):
                assert 0 <= x1 < x2 <= ann["width"] and 0 <= y1 < y2 <= ann["height"]
                assert 0 <= label < len(space["classes"])
        elif kind == "segmentation":
            mask = np.asarray(Image.open(io.BytesIO(s["png"])))
            assert mask.shape == (ann["height"], ann["width"]) and mask.dtype == np.uint8
            assert mask.max() < len(space["classes"]) and mask.max() > 0
        elif kind == "pose":
            assert len(ann["keypoints"]) == len(space["keypoints"])
            assert all(v in (0, 1, 2) for _, _, v in ann["keypoints"])
            assert all(
                0 <= x < ann["width"] and 0 <= y < ann["height"]
                for x, y, v in ann["keypoints"]
                if v
            )
            x1, y1, x2, y2 = ann["box"]
            assert 0 <= x1 < x2 <= ann["width"] and 0 <= y1 < y2 <= ann["height"]
        elif kind in ("reid", "face"):
            assert 0 <= ann["identity"] < space["num_identities"]
        elif kind == "attributes":
            assert len(ann["attributes"]) == len(space["attributes"])
            assert set(ann["attributes"]) <= {0, 1}


def test_reid_has_repeated_identities_over_cameras() -> None:
    reid = next(t for t in SYNTH_TASKS if t.name == "reid")
    anns = [json.loads(generate_sample(reid, "train", i, seed=0)["json"]) for i in range(64)]
    cams_per_id: dict[int, set[int]] = {}
    for a in anns:
        cams_per_id.setdefault(a["identity"], set()).add(a["camera"])
    assert len(cams_per_id) == 32
    assert sum(len(c) > 1 for c in cams_per_id.values()) > 16


def test_cli_synth_and_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert (
        shards_main(
            [
                "synth",
                "--out",
                str(out),
                "--samples-per-task",
                "8",
                "--val-per-task",
                "4",
                "--samples-per-shard",
                "4",
            ]
        )
        == 0
    )
    assert shards_main(["verify", "--root", str(out)]) == 0
    shard = out / "face" / "train" / "synth-000001.tar"
    data = bytearray(shard.read_bytes())
    data[1000] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert shards_main(["verify", "--root", str(out)]) == 1
    assert "synth-000001.tar" in capsys.readouterr().err


def test_task_names_match_reference_composition() -> None:
    assert [t.name for t in SYNTH_TASKS] == list(TASK_TYPES)
