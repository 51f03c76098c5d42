"""Bad shard content is skipped with a counted reason, never crashes, and batches stay full."""

from __future__ import annotations

import io
import json
import logging
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gppf_dist.data.decode.sample import RawSample, SampleError, decode_sample, read_shard
from gppf_dist.data.format.manifest import Manifest, ShardInfo, TaskManifest
from gppf_dist.data.format.writer import ShardWriter
from gppf_dist.data.load.loader import TaskLoader, iter_eval_batches
from gppf_dist.data.load.streams import StreamPosition
from tests.fake_task import ResizeTaskType, fake_spec


def _jpeg(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (20, 16), (i * 10 % 256, 50, 90)).save(buf, format="JPEG")
    return buf.getvalue()


def _good(i: int) -> dict[str, bytes]:
    ann = {"label": i % 5, "width": 20, "height": 16}
    return {"jpg": _jpeg(i), "json": json.dumps(ann).encode()}


def _raw_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def bad_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest, set[str]]:
    """4 shards x 6 samples; streams (S=2): {0, 2} and {1, 3}; returns the good keys."""
    root = tmp_path_factory.mktemp("bad")
    good: set[str] = set()
    with ShardWriter(root, "toy", "train", "toy", samples_per_shard=6) as w:
        for i in range(12):
            key = f"k{i:03d}"
            members = _good(i)
            if i == 4:
                members["jpg"] = b"\xff\xd8\xff\xe0 this is not a jpeg"
            elif i == 5:
                del members["json"]
            elif i == 11:
                members["json"] = json.dumps({"label": 1, "bad": True}).encode()
            else:
                good.add(key)
            w.write(key, members)
    shards = w.close()
    # shard 2: written by hand with an unsafe member path and a pickle member (must be ignored)
    members = []
    for i in range(12, 17):
        m = _good(i)
        members += [(f"k{i:03d}.jpg", m["jpg"]), (f"k{i:03d}.json", m["json"])]
        good.add(f"k{i:03d}")
    members.insert(2, ("k012.pth", b"\x80\x04 not really a pickle"))
    members += [("../evil.jpg", _jpeg(0)), ("../evil.json", _good(0)["json"])]
    path2 = root / "toy/train/toy-000002.tar"
    _raw_tar(path2, members)
    shards.append(ShardInfo("toy/train/toy-000002.tar", 6, path2.stat().st_size, ""))
    # shard 3: 6 good samples, then truncated in the middle
    path3 = root / "toy/train/toy-000003.tar"
    _raw_tar(
        path3,
        [
            m
            for i in range(17, 23)
            for m in ((f"k{i:03d}.jpg", _good(i)["jpg"]), (f"k{i:03d}.json", _good(i)["json"]))
        ],
    )
    data = path3.read_bytes()
    path3.write_bytes(data[: len(data) // 2])
    survivors = [s.key for s in read_shard(path3).samples]
    assert 0 < len(survivors) < 6
    good.update(survivors)
    shards.append(ShardInfo("toy/train/toy-000003.tar", 6, len(data) // 2, ""))
    tm = TaskManifest(
        "toy", "classification", "toy", {"classes": list("abcde")}, {"train": shards, "val": shards}
    )
    return root, Manifest(tasks={"toy": tm}), good


def _loader(
    bad_root: tuple[Path, Manifest, set[str]],
    streams: list[int],
    start: dict[int, StreamPosition] | None = None,
) -> TaskLoader:
    root, manifest, _ = bad_root
    return TaskLoader(
        root=root,
        manifest=manifest,
        task="toy",
        spec=fake_spec("toy", (8, 8)),
        task_type=ResizeTaskType(),
        num_streams=2,
        stream_ids=streams,
        per_stream_batch=3,
        seed=0,
        start_positions=start,
    )


def test_bad_samples_skipped_counted_batches_full(
    bad_root: tuple[Path, Manifest, set[str]], caplog: pytest.LogCaptureFixture
) -> None:
    _, _, good = bad_root
    loader = _loader(bad_root, [0, 1])
    with caplog.at_level(logging.WARNING, logger="gppf_dist.data.decode.sample"):
        batches = [next(loader) for _ in range(10)]
    assert all(len(b.keys) == 6 for b in batches)
    seen = [k for b in batches for k in b.keys]
    assert set(seen) == good
    stream0 = [k for b in batches for k, g in zip(b.keys, b.groups.tolist(), strict=True) if g == 0]
    good0 = {k for k in good if int(k[1:]) < 6 or 12 <= int(k[1:]) < 17}
    # The first epoch of stream 0 is its first 12 slots: every good sample in them (a bad
    # sample's slot holds the next good one, so some appear twice).
    assert set(stream0[:12]) == good0
    skipped = loader.skipped
    for reason in ("decode", "missing_member", "annotation", "unsafe_path", "truncated"):
        assert skipped.get(reason, 0) >= 1, (reason, skipped)
    reasons = [r.getMessage().split("[")[1].split("]")[0] for r in caplog.records]
    assert "truncated_shard" in reasons  # the read error is logged, its lost samples counted
    assert len(reasons) == len(set(reasons))  # rate-limited: one warning per reason


def test_resume_exact_with_bad_samples(bad_root: tuple[Path, Manifest, set[str]]) -> None:
    full = _loader(bad_root, [0, 1])
    for _ in range(3):
        next(full)
    resumed = _loader(bad_root, [1, 0], start=full.positions())
    for _ in range(4):
        a, b = next(full), next(resumed)
        assert sorted(a.keys) == sorted(b.keys)


def test_eval_skips_bad_samples(bad_root: tuple[Path, Manifest, set[str]]) -> None:
    root, manifest, good = bad_root
    it = iter_eval_batches(
        root=root,
        manifest=manifest,
        task="toy",
        spec=fake_spec("toy", (8, 8)),
        task_type=ResizeTaskType(),
        batch_size=5,
    )
    keys = [k for b in it for k in b.keys]
    assert sorted(keys) == sorted(good)
    assert it.skipped["decode"] == 1 and it.skipped["unsafe_path"] == 1


def test_all_bad_stream_raises_instead_of_spinning(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, "toy", "train", "toy", samples_per_shard=2) as w:
        for i in range(4):
            w.write(f"b{i}", {"jpg": b"garbage", "json": b"{}"})
    tm = TaskManifest("toy", "classification", "toy", {"classes": ["a"]}, {"train": w.close()})
    loader = TaskLoader(
        root=tmp_path,
        manifest=Manifest(tasks={"toy": tm}),
        task="toy",
        spec=fake_spec("toy"),
        task_type=ResizeTaskType(),
        num_streams=1,
        stream_ids=[0],
        per_stream_batch=2,
        seed=0,
    )
    with pytest.raises(RuntimeError, match="no usable sample"):
        next(loader)


def test_missing_shard_file_is_counted(tmp_path: Path) -> None:
    with ShardWriter(tmp_path, "toy", "train", "toy", samples_per_shard=2) as w:
        for i in range(4):
            w.write(f"g{i}", _good(i))
    shards = w.close()
    (tmp_path / shards[1].path).unlink()
    tm = TaskManifest("toy", "classification", "toy", {"classes": ["a"]}, {"train": shards})
    loader = TaskLoader(
        root=tmp_path,
        manifest=Manifest(tasks={"toy": tm}),
        task="toy",
        spec=fake_spec("toy"),
        task_type=ResizeTaskType(),
        num_streams=1,
        stream_ids=[0],
        per_stream_batch=3,
        seed=0,
    )
    # 4 steps of 3 slots: 3 epochs of 4 slots, 2 of them on the missing shard each epoch; their
    # slots hold the next good samples.
    keys = [k for _ in range(4) for k in next(loader).keys]
    assert len(keys) == 12 and set(keys) == {"g0", "g1"}
    assert loader.skipped == {"shard_read": 6}


def test_decode_sample_checks() -> None:
    ok = _good(1)
    sample = decode_sample(RawSample("a", dict(ok)))
    assert sample.image.shape == (16, 20, 3) and sample.image.flags.writeable
    assert sample.mask is None
    with pytest.raises(SampleError) as exc:
        decode_sample(RawSample("a", {**ok, "json": b"[1]"}))
    assert exc.value.reason == "annotation"
    with pytest.raises(SampleError) as exc:
        decode_sample(RawSample("a", {**ok, "json": b'{"width": 99, "height": 16}'}))
    assert exc.value.reason == "annotation" and "99" in str(exc.value)
    with pytest.raises(SampleError) as exc:
        decode_sample(RawSample("a", dict(ok)), needs_mask=True)
    assert exc.value.reason == "missing_member"
    mask = io.BytesIO()
    Image.fromarray(np.zeros((16, 20), np.uint8)).save(mask, format="PNG")
    seg = decode_sample(RawSample("a", {**ok, "png": mask.getvalue()}), needs_mask=True)
    assert seg.mask is not None and seg.mask.shape == (16, 20)
    labelled = decode_sample(RawSample("a", {"jpg": ok["jpg"], "json": b"{}", "cls": b"3\n"}))
    assert labelled.ann["label"] == 3
