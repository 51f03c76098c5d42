"""A restart reads its checkpoint once across the job (checkpoint/resume.py), on real gloo ranks:
each rank checksums a share, a damaged newest checkpoint is skipped on every rank alike, a
damaged tag asked for by name is refused on every rank, and `resume=never` reads nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gppf_dist.checkpoint.digest import list_files, record_file
from gppf_dist.checkpoint.layout import tag_for_step
from gppf_dist.checkpoint.manager import mark_complete
from gppf_dist.checkpoint.layout import COMPLETE
from gppf_dist.checkpoint.marker import Marker, Topology

from .harness import run_distributed

SIZES = {"mp_rank_00_model_states.pt": 300_000, "gppf/shared.pt": 200_000,
         "gppf/lego_00_00.pt": 100_000, "gppf/lego_00_01.pt": 100_000}  # fmt: skip


def _save(ckpt: Path, step: int) -> None:
    tag_dir = ckpt / tag_for_step(step)
    for name, size in SIZES.items():
        (tag_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (tag_dir / name).write_bytes(bytes([step]) * size)
    listed = list_files(tag_dir, frozenset({COMPLETE}))
    files = {name: record_file(tag_dir / name) for name in listed}
    mark_complete(ckpt, tag_for_step(step), Marker(step, Topology(2, 1, 0), None, files).to_json())


def _select(ckpt: str, resumes: list[str]) -> list[dict[str, Any]]:
    """Each `resume` in turn, in one process group: the tag chosen (or the refusal) and the
    bytes this rank hashed for it."""
    import torch.distributed as dist

    from gppf_dist.checkpoint.digest import bytes_hashed
    from gppf_dist.checkpoint.resume import select_resume

    dist.init_process_group("gloo")
    results = []
    try:
        for resume in resumes:
            before = bytes_hashed()
            try:
                tag: Any = select_resume(Path(ckpt), resume)
            except ValueError as err:
                tag = f"refused: {err}"
            results.append({"tag": tag, "hashed": bytes_hashed() - before})
        return results
    finally:
        dist.destroy_process_group()


def test_each_rank_reads_a_share_and_together_the_checkpoint_once(tmp_path: Path) -> None:
    for step in (2, 4):
        _save(tmp_path, step)
    (auto, never), (auto_1, never_1) = run_distributed(_select, 2, str(tmp_path), ["auto", "never"])
    got = [auto, auto_1]
    assert [r["tag"] for r in got] == ["step_00000004"] * 2
    assert sum(r["hashed"] for r in got) == sum(SIZES.values())  # once, not once per rank
    assert all(r["hashed"] > 0 for r in got)  # shared: 300k + 100k against 200k + 100k
    assert [(r["tag"], r["hashed"]) for r in (never, never_1)] == [(None, 0)] * 2


def test_a_damaged_newest_is_skipped_on_every_rank_and_a_named_one_refused(
    tmp_path: Path,
) -> None:
    for step in (2, 4):
        _save(tmp_path, step)
    lego = tmp_path / tag_for_step(4) / "gppf" / "lego_00_01.pt"
    data = bytearray(lego.read_bytes())
    data[7] ^= 0xFF  # same size: only a checksum sees it
    lego.write_bytes(bytes(data))
    ranks = run_distributed(_select, 2, str(tmp_path), ["auto", "step_00000004"])
    got, named = [r[0] for r in ranks], [r[1] for r in ranks]
    assert [r["tag"] for r in got] == ["step_00000002"] * 2
    # the damaged one, then the older one: each read once across the two ranks
    assert sum(r["hashed"] for r in got) == 2 * sum(SIZES.values())
    for result in named:
        assert result["tag"].startswith("refused: `resume`='step_00000004'")
        assert "gppf/lego_00_01.pt: checksum differs from its marker's" in result["tag"]
