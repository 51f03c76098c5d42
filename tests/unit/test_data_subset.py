"""Few-shot and fractional training sets (`data/tools/subset.py`) on real shards."""

from __future__ import annotations

from pathlib import Path

import pytest

from gppf_dist.data.decode.sample import read_shard
from gppf_dist.data.format.manifest import load_manifest
from gppf_dist.data.synth.corpus import write_synthetic_corpus
from gppf_dist.data.tools.subset import select_subset, write_subset


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("subset_src")
    write_synthetic_corpus(out, samples_per_task=40, val_per_task=8, seed=0, samples_per_shard=16,
                           tasks=["cls_object", "det"])  # fmt: skip
    return out


def test_a_fraction_is_seeded_and_sized(root: Path) -> None:
    tm = load_manifest(root).task("cls_object")
    a = select_subset(root, tm, 0, 0.25, seed=1)
    assert len(a) == 10 and a == sorted(set(a)) and a == select_subset(root, tm, 0, 0.25, 1)
    assert a != select_subset(root, tm, 0, 0.25, seed=2)


def test_the_subset_root_holds_the_kept_samples_and_the_original_val(
    root: Path, tmp_path: Path
) -> None:
    manifest = load_manifest(root)
    keep = select_subset(root, manifest.task("cls_object"), 2, 1.0, seed=0)
    out = tmp_path / "sub"
    write_subset(root, manifest, "cls_object", out, keep, seed=0)
    sub = load_manifest(out)  # checks every shard exists with its size
    assert sub.task("cls_object").num_samples("train") == len(keep)
    assert sub.task("cls_object").shards("val") == manifest.task("cls_object").shards("val")
    shard = sub.task("cls_object").shards("train")[0]
    assert len(shard.offsets) == shard.samples + 1  # our writer: readable by byte range
    keys = [raw.key for raw in read_shard(out / shard.path).samples]
    originals = {raw.key for s in manifest.task("cls_object").shards("train")
                 for raw in read_shard(root / s.path).samples}  # fmt: skip
    assert set(keys) <= originals and len(keys) == len(keep)


def test_shots_need_a_classification_task(root: Path) -> None:
    with pytest.raises(ValueError, match="`finetune.shots`=3: shots per class need"):
        select_subset(root, load_manifest(root).task("det"), 3, 1.0, 0)
