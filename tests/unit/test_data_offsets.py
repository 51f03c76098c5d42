"""Sample offsets out of manifest.json (format 2): one mapped file per task and split, the
previous format refused by name and upgraded in place (a crash midway leaves it readable),
and decode workers handed only the shards of their streams."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest

from gppf_dist.cli.shards import main as shards_main
from gppf_dist.data.format import offsets as offsets_mod
from gppf_dist.data.format.index import upgrade_root
from gppf_dist.data.format.manifest import load_manifest
from gppf_dist.data.format.offsets import ShardOffsets, read_index
from gppf_dist.data.load.loader import TaskLoader
from gppf_dist.data.synth.corpus import write_synthetic_corpus
from tests.fake_task import ResizeTaskType, fake_spec
from tests.shard_roots import to_format_1


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("offsets")
    write_synthetic_corpus(
        out, samples_per_task=48, val_per_task=8, seed=3, samples_per_shard=4,
        tasks=["det", "cls_object"],
    )  # fmt: skip
    return out


def snapshot(root: Path) -> dict[str, bytes]:
    files = [root / "manifest.json", *sorted((root / "index").iterdir())]
    return {f.name: f.read_bytes() for f in files}


def test_offsets_live_in_one_file_per_split_and_are_mapped(corpus: Path) -> None:
    raw = json.loads((corpus / "manifest.json").read_text())
    assert raw["schema_version"] == 2
    det = raw["tasks"]["det"]
    assert "offsets" not in json.dumps(det["splits"])  # per-shard facts only
    assert det["offsets"]["train"]["path"] == "index/det.train.offsets"
    shards = load_manifest(corpus).task("det").shards("train")
    assert all(isinstance(s.offsets, ShardOffsets) for s in shards)
    stored = read_index(corpus / "index/det.train.offsets")
    assert [list(s.offsets) for s in shards] == stored
    assert all(
        len(o) == s.samples + 1 and o[-1] <= s.bytes for s, o in zip(shards, stored, strict=True)
    )
    # A pickled shard (what a spawned decode worker receives) names the file, not the values.
    assert len(pickle.dumps(shards[0])) < 600
    assert list(pickle.loads(pickle.dumps(shards[0])).offsets) == stored[0]


def test_the_previous_format_is_refused_naming_the_command(corpus: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(corpus, old)
    to_format_1(old)
    with pytest.raises(ValueError, match=rf"schema_version 1.*`gppf-shards upgrade {old}`"):
        load_manifest(old)


def test_upgrade_writes_what_the_writer_writes_and_is_idempotent(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = tmp_path / "old"
    shutil.copytree(corpus, old)
    to_format_1(old)
    assert shards_main(["upgrade", str(old)]) == 0
    assert "upgraded" in capsys.readouterr().out
    assert snapshot(old) == snapshot(corpus)
    assert shards_main(["upgrade", str(old)]) == 0
    assert "already in the current format" in capsys.readouterr().out
    assert snapshot(old) == snapshot(corpus)


def test_a_crash_midway_through_the_upgrade_leaves_a_readable_corpus(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = tmp_path / "old"
    shutil.copytree(corpus, old)
    to_format_1(old)
    before = (old / "manifest.json").read_bytes()
    real = offsets_mod.write_index
    calls: list[Path] = []

    def dies_on_the_third(path: Path, per_shard: object) -> int:
        calls.append(path)
        if len(calls) == 3:
            raise OSError("killed")
        return real(path, per_shard)  # type: ignore[arg-type]

    monkeypatch.setattr("gppf_dist.data.format.manifest.write_index", dies_on_the_third)
    with pytest.raises(OSError, match="killed"):
        upgrade_root(old)
    assert (old / "manifest.json").read_bytes() == before  # still the whole previous format
    assert not list(old.rglob(".*.tmp.*"))
    monkeypatch.setattr("gppf_dist.data.format.manifest.write_index", real)
    assert upgrade_root(old) is not None  # the rerun finishes the job
    assert snapshot(old) == snapshot(corpus)


def test_decode_workers_receive_only_the_shards_of_their_streams(corpus: Path) -> None:
    manifest = load_manifest(corpus)
    shards = manifest.task("det").shards("train")
    assert len(shards) == 12
    loader = TaskLoader(
        root=corpus, manifest=manifest, task="det", spec=fake_spec("det"),
        task_type=ResizeTaskType(), num_streams=6, stream_ids=[1, 4], per_stream_batch=2,
        seed=5, num_workers=1,
    )  # fmt: skip
    try:
        dataset = loader._pool._dataset  # type: ignore[union-attr]
        assert sorted(dataset.shards) == [1, 4, 7, 10]  # shards i with i % 6 in (1, 4)
        assert sorted(dataset.units) == [1, 4]
        assert next(loader).images.shape[0] == 4
    finally:
        loader.close()


def test_next_slots_say_where_the_next_step_reads_without_reading(corpus: Path) -> None:
    from gppf_dist.data.decode.sample import read_shard
    from gppf_dist.data.load.streams import StreamPosition

    manifest = load_manifest(corpus)
    loader = TaskLoader(
        root=corpus, manifest=manifest, task="det", spec=fake_spec("det"),
        task_type=ResizeTaskType(), num_streams=6, stream_ids=[0, 3], per_stream_batch=3,
        seed=5, start_positions={3: StreamPosition(2, 5)},
    )  # fmt: skip
    slots = loader.next_slots()
    assert [stream for stream, _, _ in slots] == [0, 0, 0, 3, 3, 3]
    expected = [read_shard(corpus / shard.path).samples[k].key for _, shard, k in slots]
    assert next(loader).keys == expected  # the synthetic samples are all good: no fallbacks


def test_a_lost_offsets_file_is_named_and_the_index_command_writes_it_again(
    corpus: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "root"
    shutil.copytree(corpus, root)
    (root / "index/det.train.offsets").unlink()
    shards = load_manifest(root).task("det").shards("train")  # still loads: only an index
    assert "det.train.offsets" in caplog.text and "gppf-shards index" in caplog.text
    assert not any(s.has_offsets for s in shards)
    with pytest.raises(ValueError, match="gppf-shards index"):
        shards[0].segment(0, 1)
    assert shards_main(["index", "--root", str(root)]) == 0
    assert snapshot(root) == snapshot(corpus)
