"""TaskLoader over canonical streams: coverage, world-size invariance, exact resume, eval parts."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from pathlib import Path

import pytest
import torch

from gppf_dist.data.format.manifest import Manifest, load_manifest
from gppf_dist.data.load.loader import TaskLoader, iter_eval_batches
from gppf_dist.data.load.streams import StreamPosition
from gppf_dist.data.synth.corpus import write_synthetic_corpus
from gppf_dist.tasks.base import Batch
from tests.fake_task import ResizeTaskType, fake_spec

S = 3
PSB = 4  # per-stream batch; each stream owns 2 shards x 8 samples = 4 steps per epoch


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    out = tmp_path_factory.mktemp("corpus")
    write_synthetic_corpus(
        out,
        samples_per_task=48,
        val_per_task=20,
        seed=1,
        samples_per_shard=8,
        tasks=["cls_object", "seg"],
    )
    return out, load_manifest(out)


def _loader(
    corpus: tuple[Path, Manifest],
    streams: list[int],
    task: str = "cls_object",
    start: dict[int, StreamPosition] | None = None,
    **kw: object,
) -> TaskLoader:
    root, manifest = corpus
    args: dict = dict(
        root=root,
        manifest=manifest,
        task=task,
        spec=fake_spec(task),
        task_type=ResizeTaskType(),
        num_streams=S,
        stream_ids=streams,
        per_stream_batch=PSB,
        seed=7,
        start_positions=start,
    )
    args.update(kw)
    return TaskLoader(**args)


def _by_key(batches: list[Batch]) -> dict[str, tuple[torch.Tensor, int, int]]:
    out = {}
    for b in batches:
        for i, k in enumerate(b.keys):
            out[k] = (b.images[i], int(b.targets[i]), int(b.groups[i]))
    return out


def test_batch_layout(corpus: tuple[Path, Manifest]) -> None:
    batch = next(_loader(corpus, [2, 0]))
    assert batch.images.shape == (2 * PSB, 3, 32, 32) and batch.images.dtype == torch.uint8
    assert batch.groups.tolist() == [2] * PSB + [0] * PSB
    assert batch.targets.shape == (2 * PSB,) and len(batch.keys) == 2 * PSB


@pytest.mark.parametrize("group", [1, 2])
def test_one_epoch_visits_every_sample_once(corpus: tuple[Path, Manifest], group: int) -> None:
    loader = _loader(corpus, list(range(S)), shards_per_group=group)
    keys = [k for _ in range(4) for k in next(loader).keys]
    assert len(keys) == 48 and len(set(keys)) == 48
    assert set(keys) == {f"cls_object_train_{i:07d}" for i in range(48)}
    assert loader.positions() == {s: StreamPosition(0, 16) for s in range(S)}
    second = [k for _ in range(4) for k in next(loader).keys]
    assert set(second) == set(keys) and second != keys  # reshuffled per epoch
    assert loader.skipped == {}


@pytest.mark.parametrize("partition", [[[0, 1, 2]], [[0, 2], [1]], [[2], [0], [1]]])
def test_global_batch_independent_of_ranks(
    corpus: tuple[Path, Manifest], partition: list[list[int]]
) -> None:
    reference = _loader(corpus, [0, 1, 2])
    ranks = [_loader(corpus, streams) for streams in partition]
    for _ in range(6):  # crosses an epoch boundary
        want = _by_key([next(reference)])
        got = _by_key([next(r) for r in ranks])
        assert want.keys() == got.keys()
        for k, (img, target, group) in want.items():
            assert torch.equal(img, got[k][0]) and (target, group) == got[k][1:]


@pytest.mark.parametrize("group", [1, 2])
def test_resume_is_exact_even_on_other_world_size(
    corpus: tuple[Path, Manifest], group: int
) -> None:
    full = _loader(corpus, [0, 1, 2], shards_per_group=group)
    batches = []
    saved: dict[int, StreamPosition] = {}
    for step in range(7):
        if step == 3:
            saved = pickle.loads(pickle.dumps(full.positions()))
        batches.append(next(full))
    # one rank resumes all streams; or two ranks split them differently than before
    for partition in ([[0, 1, 2]], [[1], [2, 0]]):
        ranks = [_loader(corpus, s, start=saved, shards_per_group=group) for s in partition]
        for want in batches[3:]:
            got = _by_key([next(r) for r in ranks])
            exp = _by_key([want])
            assert exp.keys() == got.keys()
            assert all(torch.equal(exp[k][0], got[k][0]) for k in exp)


def test_resume_same_rank_same_order(corpus: tuple[Path, Manifest]) -> None:
    a = _loader(corpus, [1])
    for _ in range(5):
        next(a)
    b = _loader(corpus, [1], start=a.positions())
    for _ in range(3):
        x, y = next(a), next(b)
        assert x.keys == y.keys and torch.equal(x.images, y.images)


def test_augmentation_depends_on_seed_not_global_rng(corpus: tuple[Path, Manifest]) -> None:
    torch.manual_seed(0)
    a = next(_loader(corpus, [0]))
    torch.manual_seed(1)
    b = next(_loader(corpus, [0]))
    c = next(_loader(corpus, [0], seed=8))
    assert torch.equal(a.images, b.images)
    assert a.keys != c.keys or not torch.equal(a.images, c.images)


def test_segmentation_needs_no_special_casing(corpus: tuple[Path, Manifest]) -> None:
    batch = next(_loader(corpus, [0, 1, 2], task="seg"))
    assert len(batch.keys) == S * PSB


def test_too_few_shards_names_task_and_counts(corpus: tuple[Path, Manifest]) -> None:
    root, manifest = corpus
    bare = copy.deepcopy(manifest)  # as shards written by another tool: no sample offsets
    for split in bare.tasks["cls_object"].splits.values():
        split[:] = [dataclasses.replace(s, offsets=()) for s in split]
    with pytest.raises(ValueError, match=r"'cls_object'.*6 shards.*num_streams=7.*index"):
        _loader((root, bare), [0], num_streams=7)
    assert len(next(_loader(corpus, [0], num_streams=7)).keys) == PSB  # indexed: parts of shards


def test_bad_stream_id_and_batch_size(corpus: tuple[Path, Manifest]) -> None:
    with pytest.raises(ValueError, match="stream id 3"):
        _loader(corpus, [3])
    with pytest.raises(ValueError, match="per_stream_batch"):
        _loader(corpus, [0], per_stream_batch=0)


def test_empty_stream_ids(corpus: tuple[Path, Manifest]) -> None:
    loader = _loader(corpus, [])
    assert loader.positions() == {}
    with pytest.raises(StopIteration):
        next(loader)


@pytest.mark.parametrize("num_parts", [1, 2, 3, 7, 25])
def test_eval_parts_cover_every_sample_once(corpus: tuple[Path, Manifest], num_parts: int) -> None:
    root, manifest = corpus
    keys: list[str] = []
    for part in range(num_parts):
        for batch in iter_eval_batches(
            root=root,
            manifest=manifest,
            task="cls_object",
            spec=fake_spec(),
            task_type=ResizeTaskType(),
            batch_size=3,
            num_parts=num_parts,
            part=part,
        ):
            assert 1 <= len(batch.keys) <= 3
            assert batch.groups.tolist() == [part] * len(batch.keys)
            keys.extend(batch.keys)
    assert sorted(keys) == [f"cls_object_val_{i:07d}" for i in range(20)]


def test_eval_is_deterministic_without_augmentation(corpus: tuple[Path, Manifest]) -> None:
    root, manifest = corpus
    kw = dict(
        root=root,
        manifest=manifest,
        task="cls_object",
        spec=fake_spec(),
        task_type=ResizeTaskType(),
        batch_size=8,
    )
    a, b = list(iter_eval_batches(**kw)), list(iter_eval_batches(**kw))
    assert [x.keys for x in a] == [x.keys for x in b]
    assert all(torch.equal(x.images, y.images) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(("take", "micro"), [((1, 2 * PSB - 1), 0), ((0, 3), 0), ((2, 7), 2)])
def test_a_slice_and_its_micro_batches_are_the_whole_batch_s_samples(
    corpus: tuple[Path, Manifest], take: tuple[int, int], micro: int
) -> None:
    whole = _loader(corpus, [1, 2])
    part = _loader(corpus, [1, 2], take=take, micro_batch=micro)
    per_step = -(-(take[1] - take[0]) // micro) if micro else 1
    for _ in range(4):
        expected = next(whole)
        got = [next(part) for _ in range(per_step)]
        assert [k for b in got for k in b.keys] == expected.keys[take[0] : take[1]]
        images = torch.cat([b.images for b in got])
        assert torch.equal(images, expected.images[take[0] : take[1]])
        groups = torch.cat([b.groups for b in got])
        assert torch.equal(groups, expected.groups[take[0] : take[1]])
        assert all(len(b.keys) <= (micro or len(b.keys)) for b in got)
        assert part.positions() == whole.positions()  # a step advances every stream alike


def test_a_stream_shared_by_two_slices_counts_its_skips_once(
    corpus: tuple[Path, Manifest],
) -> None:
    root, manifest = corpus

    class Fussy(ResizeTaskType):  # every sample whose key ends in 3 or 7 is bad
        def prepare(self, sample, spec, train, rng):  # noqa: ANN001, ANN202
            if sample.key[-1] in "37":
                raise ValueError(f"sample {sample.key!r}: bad")
            return super().prepare(sample, spec, train, rng)

    def loader(take: tuple[int, int] | None) -> TaskLoader:
        return _loader(corpus, [0, 1], task_type=Fussy(), take=take)

    whole, head, tail = loader(None), loader((0, PSB + 1)), loader((PSB + 1, 2 * PSB))
    for _ in range(6):
        batch = next(whole)
        assert next(head).keys + next(tail).keys == batch.keys
    total = sum(whole.skipped.values())
    assert total > 0
    assert sum(head.skipped.values()) + sum(tail.skipped.values()) == total


def test_a_slice_outside_its_streams_names_the_task(corpus: tuple[Path, Manifest]) -> None:
    with pytest.raises(ValueError, match="task 'cls_object': samples \\[2, 9\\]"):
        _loader(corpus, [0, 1], take=(2, 9))


@pytest.mark.parametrize("num_workers", [0, 1])
def test_a_slice_decodes_and_reads_only_its_samples(
    corpus: tuple[Path, Manifest], num_workers: int
) -> None:
    """A rank training on a quarter of a stream's share prepares only those samples and reads
    them by their byte ranges (the manifest's offsets): bytes read / bytes decoded is 1.0, where
    reading the stream's shards whole would make it 4."""
    whole = _loader(corpus, [0])
    quarter = _loader(corpus, [0], take=(1, 2), num_workers=num_workers)
    for _ in range(2 * 16 // PSB):  # two epochs of the stream's 16 samples
        assert next(quarter).keys == next(whole).keys[1:2]
    assert whole.read_amplification == 1.0
    assert quarter.read_amplification == 1.0
    quarter.close()


def test_a_slice_of_shards_without_offsets_reads_them_whole(corpus: tuple[Path, Manifest]) -> None:
    root, manifest = corpus
    bare = copy.deepcopy(manifest)
    tm = bare.tasks["cls_object"]
    tm.splits["train"] = [dataclasses.replace(s, offsets=()) for s in tm.splits["train"]]
    quarter = _loader((root, bare), [0], take=(1, 2))
    for _ in range(16 // PSB):
        next(quarter)
    assert quarter.read_amplification == pytest.approx(4.0, rel=0.1)  # sample sizes vary
