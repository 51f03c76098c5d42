"""More streams than shards: streams own parts of shards, read by byte range from the
manifest's sample offsets (`gppf-shards index` adds them to shards written elsewhere)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

from gppf_dist.cli.shards import main as shards_main
from gppf_dist.data.decode.sample import read_shard
from gppf_dist.data.format.manifest import Manifest, load_manifest
from gppf_dist.data.load.loader import TaskLoader
from gppf_dist.data.load.streams import StreamPosition, stream_units
from gppf_dist.data.synth.corpus import write_synthetic_corpus
from tests.fake_task import ResizeTaskType, fake_spec
from tests.shard_roots import edited_root, without_offsets

S = 12  # streams: twice the 6 train shards (8 samples each), so each shard is cut in two
PSB = 2


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    out = tmp_path_factory.mktemp("segments")
    write_synthetic_corpus(
        out, samples_per_task=48, val_per_task=8, seed=3, samples_per_shard=8, tasks=["det"]
    )
    return out, load_manifest(out)


def loader(corpus: tuple[Path, Manifest], streams: list[int], **kw: object) -> TaskLoader:
    root, manifest = corpus
    return TaskLoader(
        root=root, manifest=manifest, task="det", spec=fake_spec("det"),
        task_type=ResizeTaskType(), num_streams=S, stream_ids=streams, per_stream_batch=PSB,
        seed=5, **kw,
    )  # fmt: skip


def test_units_cut_shards_when_streams_outnumber_them() -> None:
    sizes = [8] * 6
    units = [stream_units("det", sizes, 12, s) for s in range(12)]
    assert all(len(u) == 1 and u[0].size == 4 for u in units)
    cover = sorted((u.shard, u.start) for us in units for u in us)
    assert cover == [(i, a) for i in range(6) for a in (0, 4)]
    assert stream_units("det", sizes, 3, 1)[0].size == 8  # whole shards as before
    with pytest.raises(ValueError, match="cannot fill num_streams=60"):
        stream_units("det", [1, 1], 60, 0)


def test_an_epoch_visits_every_sample_once_and_ranks_do_not_matter(
    corpus: tuple[Path, Manifest],
) -> None:
    whole = loader(corpus, list(range(S)))
    epoch = [k for _ in range(2) for k in next(whole).keys]  # 4 samples per stream
    assert sorted(epoch) == sorted(f"det_train_{i:07d}" for i in range(48))
    assert whole.positions() == {s: StreamPosition(0, 4) for s in range(S)}
    halves = [loader(corpus, list(range(0, S, 2))), loader(corpus, list(range(1, S, 2)))]
    again = loader(corpus, list(range(S)))
    for _ in range(3):
        want = next(again)
        got = {
            k: img
            for h in halves
            for b in [next(h)]
            for k, img in zip(b.keys, b.images, strict=True)
        }
        assert set(got) == set(want.keys)
        assert all(torch.equal(got[k], img) for k, img in zip(want.keys, want.images, strict=True))


def test_resume_is_exact(corpus: tuple[Path, Manifest]) -> None:
    first = loader(corpus, list(range(S)))
    for _ in range(3):
        next(first)
    saved = pickle.loads(pickle.dumps(first.positions()))
    resumed = loader(corpus, list(range(S)), start_positions=saved)
    for _ in range(3):
        assert next(first).keys == next(resumed).keys


def test_a_part_reads_only_its_bytes(corpus: tuple[Path, Manifest]) -> None:
    root, manifest = corpus
    shard = manifest.task("det").shards("train")[2]
    whole = read_shard(root / shard.path)
    part = read_shard(root / shard.path, shard.segment(3, 6))
    assert part.error is None
    assert [s.key for s in part.samples] == [s.key for s in whole.samples[3:6]]
    a, b = shard.segment(3, 6)
    assert b - a < shard.bytes / 2  # three of eight samples' bytes, not the shard


def test_shards_without_offsets_are_indexed_by_the_command(
    corpus: tuple[Path, Manifest], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root, manifest = corpus
    copy = edited_root(root, tmp_path / "copy", without_offsets)
    unindexed = load_manifest(copy).task("det").shards("train")[0]
    with pytest.raises(ValueError, match="gppf-shards index"):
        unindexed.segment(0, 4)
    assert shards_main(["index", "--root", str(copy)]) == 0
    assert "indexed 7 shards" in capsys.readouterr().out  # 6 train + 1 val
    assert load_manifest(copy).task("det").shards("train") == manifest.task("det").shards("train")


def test_a_run_with_more_streams_than_shards_is_checked_before_it_starts(
    compose_run: Any, corpus: tuple[Path, Manifest], tmp_path: Path
) -> None:
    from gppf_dist.preflight.validate import validate_run

    root, _ = corpus

    def cfg(data_root: Path) -> Any:
        return compose_run(
            "simt.only=[det]", f"data.root={data_root}", "data.streams_per_task=12",
            "simt.tasks.det.batch_size=24", f"run.dir={tmp_path / 'run'}",
        )  # fmt: skip

    validate_run(cfg(root), 2)  # indexed shards: 12 streams over 6 shards is fine
    bare = edited_root(root, tmp_path / "bare", without_offsets)
    with pytest.raises(ValueError, match="exceeds the 6 train shards.*gppf-shards index --root"):
        validate_run(cfg(bare), 2)


def test_stale_offsets_are_ignored_and_malformed_ones_named(
    corpus: tuple[Path, Manifest], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root, _ = corpus

    def stale(offsets: list[list[int]]) -> None:  # indexed before the shard was rewritten
        offsets[0] = offsets[0][:-1]

    copy = edited_root(root, tmp_path / "copy", offsets={("det", "train"): stale})
    assert load_manifest(copy).task("det").shards("train")[0].offsets == ()
    assert "offsets.train: shard 0" in caplog.text and "gppf-shards index" in caplog.text

    def malformed(offsets: list[list[int]]) -> None:
        offsets[0][1:3] = [offsets[0][2], offsets[0][1]]

    bad = edited_root(root, tmp_path / "bad", offsets={("det", "train"): malformed})
    shard = load_manifest(bad).task("det").shards("train")[0]  # offsets are checked when used
    with pytest.raises(ValueError, match=r"det.train.offsets: the offsets of shard 0 do not"):
        shard.segment(0, 2)

    def beyond(offsets: list[list[int]]) -> None:  # the shard was cut after it was indexed
        offsets[1][-1] += 1 << 20

    cut = edited_root(root, tmp_path / "cut", offsets={("det", "train"): beyond})
    with pytest.raises(ValueError, match=r"reach byte \d+ of a \d+-byte file \(stale"):
        load_manifest(cut).task("det").shards("train")[1].segment(0, 8)


def test_verify_finds_offsets_that_do_not_match_and_index_force_rebuilds_them(
    corpus: tuple[Path, Manifest], tmp_path: Path
) -> None:
    from gppf_dist.data.tools.verify import verify_root

    root, _ = corpus

    def shifted(offsets: list[list[int]]) -> None:  # right length, wrong places
        offsets[1] = [offsets[1][0]] + [o - 512 for o in offsets[1][1:]]

    copy = edited_root(root, tmp_path / "copy", offsets={("det", "train"): shifted})
    problems = [p for r in verify_root(copy) for p in r.problems]
    assert len(problems) == 1 and "sample offsets do not match" in problems[0].reason
    assert problems[0].shard.endswith("-000001.tar")
    assert shards_main(["index", "--root", str(copy), "--force"]) == 0
    assert not [p for r in verify_root(copy) for p in r.problems]
