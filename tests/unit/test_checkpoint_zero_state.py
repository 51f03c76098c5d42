"""ZeRO 1/2 partitions saved by name and offset (`checkpoint/zero_state.py`): written as one
layout's partitions, read back into another's, element for element; gaps and disagreeing steps
fail naming the parameter. (Whole runs: `tests/dist/test_zero_world_free.py`.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gppf_dist.checkpoint.zero_state import (
    MASTER,
    STATE_KEYS,
    Partition,
    Piece,
    Sources,
    fill_partition,
    fill_whole,
    likely_files,
    partition_files,
    save_partitions,
)

PARAMS = {"a.weight": (3, 5), "b.bias": (7,), "c.weight": (2, 2, 2)}
"""Flattened one after another into a group, as ZeRO does: 15 + 7 + 8 = 30 elements."""


def full_state(seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return {
        name: {k: torch.randn(shape, generator=gen) for k in (MASTER, *STATE_KEYS)}
        for name, shape in PARAMS.items()
    }


State = dict[str, dict[str, torch.Tensor]]


def partitions(world: int, state: State | None, step: float) -> list[Partition]:
    """Each rank's share of the one flat group (padded to a multiple of `world`), filled from
    `state` (None: zeros, a destination)."""
    sizes = {n: torch.Size(s).numel() for n, s in PARAMS.items()}
    total = sum(sizes.values())
    size = -(-total // world)
    parts = []
    for rank in range(world):
        lo, hi = rank * size, min((rank + 1) * size, total)
        tensors = {k: torch.zeros(size) for k in (MASTER, *STATE_KEYS)}
        pieces, begin = [], 0
        for name, n in sizes.items():
            a, b = max(lo, begin), min(hi, begin + n)
            if a < b:
                pieces.append(Piece(name, a - begin, b - a, a - lo))
                if state is not None:
                    for k, t in tensors.items():
                        t[a - lo : b - lo] = state[name][k].reshape(-1)[a - begin : b - begin]
            begin += n
        parts.append(Partition(tensors, torch.tensor(step), pieces))
    return parts


def saved_at(tmp_path: Path, world: int, step: float = 4.0, seed: int = 0) -> Sources:
    for rank, part in enumerate(partitions(world, full_state(seed), step)):
        save_partitions([part], tmp_path, rank)
    sources = Sources()
    for path in partition_files(tmp_path):
        sources.add_partition_file(path)
    return sources


@pytest.mark.parametrize(("was", "now"), [(3, 2), (2, 3), (4, 1), (1, 4)])
def test_another_world_size_gets_every_element(tmp_path: Path, was: int, now: int) -> None:
    sources = saved_at(tmp_path, was)
    state = full_state()
    for part in partitions(now, None, 0.0):
        fill_partition(part, sources)
        assert float(part.step) == 4.0
        for piece in part.pieces:
            for key, flat in part.tensors.items():
                want = state[piece.name][key].reshape(-1)[piece.start : piece.start + piece.numel]
                assert torch.equal(flat[piece.offset : piece.offset + piece.numel], want)


@pytest.mark.parametrize(("was", "now"), [(3, 2), (2, 3), (8, 3), (3, 8), (5, 5), (16, 1)])
def test_each_rank_finds_its_pieces_in_the_files_around_its_share(
    tmp_path: Path, was: int, now: int
) -> None:
    """Only `likely_files` are opened, and they cover the share (same layout: 3 files)."""
    saved_at(tmp_path, was)
    files = partition_files(tmp_path)
    for rank, part in enumerate(partitions(now, None, 0.0)):
        chosen = likely_files(files, rank, now)
        assert len(chosen) <= -(-was // now) + 3
        sources = Sources()
        for path in chosen:
            sources.add_partition_file(path)
        fill_partition(part, sources)
    if was == now:
        assert [p.name for p in likely_files(files, 2, now)] == [
            "zero_00001.pt",
            "zero_00002.pt",
            "zero_00003.pt",
        ]


def test_a_whole_parameter_is_assembled_from_the_pieces(tmp_path: Path) -> None:
    sources = saved_at(tmp_path, 3)
    want = full_state()["a.weight"]
    param = torch.zeros(PARAMS["a.weight"])
    opt = {"step": torch.tensor(0.0), **{k: torch.zeros_like(param) for k in STATE_KEYS}}
    fill_whole("a.weight", param, opt, sources)
    assert torch.equal(param, want[MASTER]) and float(opt["step"]) == 4.0
    assert all(torch.equal(opt[k], want[k]) for k in STATE_KEYS)


def test_whole_sources_fill_partitions(tmp_path: Path) -> None:
    """An expert-parallel lego's whole file feeds a ZeRO partition at EP 1."""
    state, sources = full_state(), Sources()
    for name, tensors in state.items():
        sources.add_whole(name, tensors, 2.0, f"lego file of {name}")
    for part in partitions(2, None, 0.0):
        fill_partition(part, sources)
        for piece in part.pieces:
            want = state[piece.name][MASTER].reshape(-1)[piece.start : piece.start + piece.numel]
            got = part.tensors[MASTER][piece.offset : piece.offset + piece.numel]
            assert torch.equal(got, want)


def test_a_missing_rank_file_fails_naming_the_parameter(tmp_path: Path) -> None:
    saved_at(tmp_path, 3)
    sources = Sources()
    for path in partition_files(tmp_path)[:2]:  # rank 2's file lost
        sources.add_partition_file(path)
    # rank 2 held b.bias[5:7] and all of c.weight: the first gap is named
    with pytest.raises(ValueError, match=r"\[0, 5\) of parameter 'b\.bias', not \[0, 7\)"):
        for part in partitions(1, None, 0.0):
            fill_partition(part, sources)


def test_pieces_at_different_steps_are_refused(tmp_path: Path) -> None:
    sources = saved_at(tmp_path, 2)
    sources.add_whole("z.extra", {MASTER: torch.zeros(3)}, 9.0, "x")
    part = Partition(
        {MASTER: torch.zeros(10)},
        torch.tensor(0.0),
        [Piece("a.weight", 0, 7, 0), Piece("z.extra", 0, 3, 7)],
    )
    with pytest.raises(ValueError, match="optimizer steps"):
        fill_partition(part, sources)
