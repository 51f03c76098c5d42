"""Shard writer, manifest round trip and manifest validation errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import webdataset as wds

from gppf_dist.data.format.manifest import (
    Manifest,
    TaskManifest,
    load_manifest,
    manifest_to_dict,
    save_manifest,
)
from gppf_dist.data.format.writer import ShardWriter


def _write_task(root: Path, n: int = 10, per_shard: int = 4) -> Manifest:
    with ShardWriter(root, "toy", "train", "toyset", per_shard) as w:
        for i in range(n):
            w.write(f"s{i:03d}", {"jpg": b"\xff\xd8fake" * i, "json": b'{"label": 1}', "cls": b"1"})
    tm = TaskManifest(
        "toy", "classification", "toyset", {"classes": ["a", "b"]}, {"train": w.close(), "val": []}
    )
    manifest = Manifest(tasks={"toy": tm})
    save_manifest(root, manifest)
    return manifest


def test_writer_splits_into_shards_and_roundtrips(tmp_path: Path) -> None:
    manifest = _write_task(tmp_path)
    shards = manifest.tasks["toy"].splits["train"]
    assert [s.samples for s in shards] == [4, 4, 2]
    assert [s.path for s in shards] == [f"toy/train/toyset-{i:06d}.tar" for i in range(3)]
    assert all(s.bytes == (tmp_path / s.path).stat().st_size for s in shards)
    loaded = load_manifest(tmp_path)
    assert manifest_to_dict(loaded) == manifest_to_dict(manifest)
    assert not list(tmp_path.glob(".manifest.json.tmp*"))


def test_writer_is_reproducible(tmp_path: Path) -> None:
    a = _write_task(tmp_path / "a")
    b = _write_task(tmp_path / "b")
    assert [s.sha256 for s in a.tasks["toy"].splits["train"]] == [
        s.sha256 for s in b.tasks["toy"].splits["train"]
    ]


def test_plain_webdataset_reads_shards(tmp_path: Path) -> None:
    manifest = _write_task(tmp_path)
    urls = [str(tmp_path / s.path) for s in manifest.tasks["toy"].splits["train"]]
    samples = list(wds.WebDataset(urls, shardshuffle=False))
    assert [s["__key__"] for s in samples] == [f"s{i:03d}" for i in range(10)]
    assert samples[3]["jpg"] == b"\xff\xd8fake" * 3
    assert json.loads(samples[0]["json"]) == {"label": 1}


@pytest.mark.parametrize("key", ["a.b", "", "x/y", "../z"])
def test_writer_rejects_bad_keys(tmp_path: Path, key: str) -> None:
    with (
        ShardWriter(tmp_path, "toy", "train", "toyset") as w,
        pytest.raises(ValueError, match="key"),
    ):
        w.write(key, {"jpg": b""})


def test_writer_rejects_unknown_member(tmp_path: Path) -> None:
    with (
        ShardWriter(tmp_path, "toy", "train", "toyset") as w,
        pytest.raises(ValueError, match="pth"),
    ):
        w.write("k", {"pth": b""})


def test_load_manifest_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="manifest.json"):
        load_manifest(tmp_path)


def test_load_manifest_missing_shard_names_it(tmp_path: Path) -> None:
    _write_task(tmp_path)
    (tmp_path / "toy/train/toyset-000001.tar").unlink()
    with pytest.raises(ValueError, match="toyset-000001.tar"):
        load_manifest(tmp_path)


def test_load_manifest_size_mismatch_names_shard(tmp_path: Path) -> None:
    _write_task(tmp_path)
    with open(tmp_path / "toy/train/toyset-000002.tar", "ab") as f:
        f.write(b"x")
    with pytest.raises(ValueError, match="toyset-000002.tar.*bytes"):
        load_manifest(tmp_path)


def test_load_manifest_invalid_json(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{nope")
    with pytest.raises(ValueError, match="manifest.json.*not valid JSON"):
        load_manifest(tmp_path)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.update(schema_version=3), "schema_version"),
        (lambda d: d["tasks"]["toy"].pop("type"), r"tasks.toy.type"),
        (lambda d: d["tasks"]["toy"]["label_space"].pop("classes"), "classes"),
        (
            lambda d: d["tasks"]["toy"]["splits"]["train"][0].update(samples="4"),
            r"train\[0\].samples",
        ),
        (lambda d: d["tasks"]["toy"]["splits"]["train"][0].update(path="../x.tar"), r"\.\./x"),
        (lambda d: d["tasks"]["toy"]["splits"].update(test=[]), "test"),
    ],
)
def test_load_manifest_schema_errors_name_key(tmp_path: Path, mutate, match: str) -> None:
    _write_task(tmp_path)
    raw = json.loads((tmp_path / "manifest.json").read_text())
    mutate(raw)
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=match):
        load_manifest(tmp_path)
