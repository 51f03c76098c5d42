"""`gppf-shards inspect`: one annotated grid PNG per task, of the expected size."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gppf_dist.cli.shards import main as shards_main
from gppf_dist.data.synth.corpus import write_synthetic_corpus
from gppf_dist.data.tools.inspect import PAD, PALETTE, TEXT_H, inspect_task

# task -> image size (h, w) of the synthetic corpus and the integer upscale factor to >= 128 px
SIZES = {
    "cls_object": ((64, 64), 2),
    "cls_scene": ((64, 64), 2),
    "det": ((96, 96), 2),
    "seg": ((64, 64), 2),
    "pose": ((64, 48), 3),
    "reid": ((64, 32), 4),
    "face": ((48, 48), 3),
    "attr": ((64, 32), 4),
}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("inspect")
    write_synthetic_corpus(out, samples_per_task=8, val_per_task=4, samples_per_shard=8)
    return out


def _grid(task: str, samples: int) -> tuple[int, int]:
    (h, w), k = SIZES[task]
    cols = int(np.ceil(np.sqrt(samples)))
    rows = int(np.ceil(samples / cols))
    return cols * max(128, w * k) + (cols + 1) * PAD, rows * (h * k + TEXT_H) + (rows + 1) * PAD


def _first_annotation(root: Path, task: str) -> dict:
    with tarfile.open(next((root / task / "train").glob("*.tar"))) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".json"))
        return json.loads(tar.extractfile(member).read())  # type: ignore[union-attr]


def _keys(root: Path, task: str, split: str) -> list[str]:
    keys: list[str] = []
    for shard in sorted((root / task / split).glob("*.tar")):
        with tarfile.open(shard) as tar:
            for name in tar.getnames():
                if name.split(".")[0] not in keys:
                    keys.append(name.split(".")[0])
    return keys


def _colour_count(img: np.ndarray, colour: tuple[int, int, int]) -> int:
    return int((img == np.array(colour, np.uint8)).all(axis=-1).sum())


@pytest.mark.parametrize("task", sorted(SIZES))
def test_inspect_draws_every_task(root: Path, tmp_path: Path, task: str) -> None:
    out = tmp_path / f"{task}.png"
    assert shards_main(["inspect", str(root), "--task", task, "--n", "16", "--out", str(out)]) == 0
    drawn = np.asarray(Image.open(out).convert("RGB"))
    plain_res = inspect_task(root, task, tmp_path / "plain.png", n=16, annotate=False)
    plain = np.asarray(Image.open(plain_res.path).convert("RGB"))
    width, height = _grid(task, 8)  # the corpus has 8 train samples per task
    assert plain.shape == (height, width, 3)
    if task == "seg":  # plus the legend strip
        assert drawn.shape[1] == width and height < drawn.shape[0] <= height + 3 * TEXT_H
    else:
        assert drawn.shape == (height, width, 3)
    assert len(plain_res.keys) == 8 and plain_res.skipped == {}
    changed = (drawn[:height] != plain).any(axis=-1).sum()
    assert changed > 200, f"{task}: only {changed} pixels differ from the plain grid"
    if task == "det":  # the first sample's boxes are outlined in their class colours
        colour = PALETTE[_first_annotation(root, task)["labels"][0] % len(PALETTE)]
        assert _colour_count(drawn, colour) > _colour_count(plain, colour) + 50
    if task == "pose":
        assert _colour_count(drawn, (0, 230, 255)) > 100  # skeleton lines
    if task == "seg":  # the legend strip below the grid is not empty
        assert (drawn[height:] != drawn[-1, -1]).any()


def test_inspect_split_seed_and_n(root: Path, tmp_path: Path) -> None:
    first = inspect_task(root, "det", tmp_path / "a.png", n=3, split="val")
    assert first.keys == _keys(root, "det", "val")[:3]
    assert first.size == _grid("det", 3)
    one = inspect_task(root, "reid", tmp_path / "b.png", n=3, split="val", seed=5)
    two = inspect_task(root, "reid", tmp_path / "c.png", n=3, split="val", seed=5)
    assert one.keys == two.keys and len(one.keys) == 3
    assert set(one.keys) <= set(_keys(root, "reid", "val"))
    assert (tmp_path / "b.png").read_bytes() == (tmp_path / "c.png").read_bytes()


def test_inspect_unknown_task_names_it(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.png"
    assert shards_main(["inspect", str(root), "--task", "no_such_task", "--out", str(out)]) == 2
    assert "no_such_task" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(ValueError, match="no_such_task"):
        inspect_task(root, "no_such_task", out)
