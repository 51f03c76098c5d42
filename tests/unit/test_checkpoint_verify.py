"""Checkpoints that prove themselves: the marker's file list, what verification finds, which
checkpoint a resume picks when the newest is damaged, and the refusal when none is intact."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from gppf_dist.checkpoint.digest import list_files, record_file, share_of
from gppf_dist.checkpoint.layout import COMPLETE, LATEST, tag_for_step
from gppf_dist.checkpoint.manager import (
    find_latest,
    mark_complete,
    prune,
    resume_tag,
    select_checkpoint,
)
from gppf_dist.checkpoint.marker import Marker, Topology, read_marker
from gppf_dist.checkpoint.saving import describe_failure, write_torch
from gppf_dist.checkpoint.verify import verify_checkpoint
from gppf_dist.cli.ckpt import main as ckpt_main

LEGO = "gppf/lego_00_01.pt"


def save(ckpt: Path, step: int, *, with_files: bool = True) -> Path:
    """A checkpoint as `Checkpointer.save` leaves it: files, then the marker listing them."""
    tag = tag_for_step(step)
    tag_dir = ckpt / tag
    (tag_dir / "gppf").mkdir(parents=True)
    (tag_dir / "mp_rank_00_model_states.pt").write_bytes(bytes(range(256)) * (step + 3))
    (tag_dir / LEGO).write_bytes(b"lego" * 100 * step)
    listed = list_files(tag_dir, frozenset({COMPLETE}))
    files = {name: record_file(tag_dir / name) for name in listed} if with_files else None
    mark_complete(ckpt, tag, Marker(step, Topology(2, 1, 0), None, files).to_json())
    return tag_dir


def flip_byte(path: Path, at: int = 10) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def test_marker_records_every_file_and_round_trips(tmp_path: Path) -> None:
    tag_dir = save(tmp_path, 7)
    marker = read_marker(tag_dir)
    assert marker is not None and marker.files is not None
    assert sorted(marker.files) == [LEGO, "mp_rank_00_model_states.pt"]  # nested, not COMPLETE
    assert marker.files[LEGO] == record_file(tag_dir / LEGO)
    assert marker.files[LEGO].size == 2800
    saved = json.loads((tag_dir / COMPLETE).read_text())
    assert saved["files"][LEGO] == {"size": 2800, "sha256": marker.files[LEGO].sha256}
    assert Marker(7, Topology(2, 1, 0), None, marker.files).to_json() == saved


def test_verification_names_what_is_damaged(tmp_path: Path) -> None:
    tag_dir = save(tmp_path, 5)
    assert verify_checkpoint(tag_dir, checksums=True).intact

    flip_byte(tag_dir / LEGO)  # same size, other bytes: only the checksum sees it
    assert verify_checkpoint(tag_dir, checksums=False).intact
    assert verify_checkpoint(tag_dir, checksums=True).problems == (
        f"{LEGO}: checksum differs from its marker's",
    )

    (tag_dir / LEGO).write_bytes(b"short")
    assert verify_checkpoint(tag_dir, checksums=False).problems == (
        f"{LEGO}: 5 bytes, its marker records 2000",
    )

    (tag_dir / LEGO).unlink()
    assert verify_checkpoint(tag_dir, checksums=True).problems == (f"{LEGO}: missing",)

    (tag_dir / COMPLETE).write_text('{"step": 5, "files": ')
    (problem,) = verify_checkpoint(tag_dir, checksums=True).problems
    assert problem.startswith(f"{COMPLETE}: unreadable") and "not valid JSON" in problem


def test_a_malformed_file_list_names_the_key(tmp_path: Path) -> None:
    (tmp_path / COMPLETE).write_text(json.dumps({"step": 1, "files": {"a.pt": {"size": 3}}}))
    with pytest.raises(ValueError, match="`files` is not a map of path"):
        read_marker(tmp_path)


def test_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path: Path) -> None:
    for step in (2, 4, 6):
        save(tmp_path, step)
    (tmp_path / tag_for_step(6) / LEGO).write_bytes(b"")  # truncated
    flip_byte(tmp_path / tag_for_step(4) / "mp_rank_00_model_states.pt")

    selection = select_checkpoint(tmp_path, "auto")
    assert selection.tag == tag_for_step(2)
    assert [(v.tag, v.problems) for v in selection.damaged] == [
        (tag_for_step(6), (f"{LEGO}: 0 bytes, its marker records 2400",)),
        (tag_for_step(4), ("mp_rank_00_model_states.pt: checksum differs from its marker's",)),
    ]
    assert (tmp_path / LATEST).read_text().strip() == tag_for_step(6)  # LATEST alone is not trusted
    assert find_latest(tmp_path) == resume_tag(tmp_path, "auto") == tag_for_step(2)
    assert resume_tag(tmp_path, "never") is None


def test_a_damaged_tag_asked_for_by_name_is_refused(tmp_path: Path) -> None:
    save(tmp_path, 2)
    (tmp_path / tag_for_step(2) / LEGO).unlink()
    with pytest.raises(ValueError, match=r"`resume`='step_00000002'.*lego_00_01.pt: missing"):
        select_checkpoint(tmp_path, "step_00000002")


def test_no_intact_checkpoint_refuses_naming_every_damaged_file(tmp_path: Path) -> None:
    assert select_checkpoint(tmp_path, "auto").tag is None  # no checkpoint at all: a fresh start
    for step in (2, 4):
        save(tmp_path, step)
        (tmp_path / tag_for_step(step) / LEGO).write_bytes(b"x")
    with pytest.raises(ValueError, match="no intact checkpoint") as err:
        find_latest(tmp_path)
    for step in (2, 4):
        assert f"{tag_for_step(step)}: {LEGO}: 1 bytes" in str(err.value)


def test_old_markers_stay_loadable_but_unverified(tmp_path: Path) -> None:
    save(tmp_path, 3, with_files=False)
    (tmp_path / tag_for_step(3) / LEGO).write_bytes(b"anything")  # nothing to compare with
    selection = select_checkpoint(tmp_path, "auto")
    assert selection.tag == tag_for_step(3)
    assert selection.chosen is not None and not selection.chosen.verified


def test_prune_leaves_checkpoints_newer_than_the_saved_step(tmp_path: Path) -> None:
    """After a fallback from a damaged step 6 to step 2, saving step 4 keeps `keep` checkpoints
    up to 4 and leaves 6 alone (its own save replaces it)."""
    for step in (2, 6, 4):
        save(tmp_path, step)
    assert prune(tmp_path, keep=1, upto=4) == [tag_for_step(2)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [LATEST, "step_00000004", "step_00000006"]


def test_hash_shares_cover_every_file_once_and_balance() -> None:
    sizes = {"a": 100, "b": 60, "c": 50, "d": 10, "e": 0}
    shares = [share_of(sizes, rank, 2) for rank in range(2)]
    assert sorted(shares[0] + shares[1]) == sorted(sizes)
    assert shares == [["a", "d", "e"], ["b", "c"]]  # 110 bytes each
    assert share_of(sizes, 0, 1) == ["a", "b", "c", "d", "e"]


def test_a_full_disk_says_so_naming_the_file(tmp_path: Path) -> None:
    """/dev/full answers every write with ENOSPC: the real error, without root."""
    with pytest.raises(OSError) as err:
        write_torch({"x": list(range(1000))}, Path("/dev/full"))
    assert err.value.errno == errno.ENOSPC
    assert describe_failure(err.value) == "No space left on device (/dev/full)"
    assert describe_failure(KeyError("k")) == "KeyError: 'k'"


def test_gppf_ckpt_verify_prints_a_table_and_fails_on_a_damaged_newest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "checkpoints"
    save(ckpt, 2)
    save(ckpt, 4)
    (ckpt / tag_for_step(6)).mkdir()  # a save that never finished
    assert ckpt_main(["verify", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "resume=auto loads step_00000004" in out
    assert "incomplete" in out

    flip_byte(ckpt / tag_for_step(4) / LEGO)
    assert ckpt_main(["verify", str(tmp_path), "--sizes-only"]) == 0  # same size: not seen
    capsys.readouterr()
    assert ckpt_main(["verify", str(tmp_path)]) == 1
    rows = capsys.readouterr().out.splitlines()
    assert rows[1].split()[:4] == ["2", "2", "2,080", "ok"]
    assert rows[2].split()[:4] == ["4", "2", "3,392", "DAMAGED:"]
    assert f"{LEGO}: checksum differs" in rows[2]
    assert rows[-1] == "resume=auto loads step_00000002"
    assert ckpt_main(["verify", str(tmp_path / "nowhere")]) == 2


def test_a_truncated_tag_asked_for_by_name_is_refused_before_workers_start(
    tmp_path: Path,
    compose_run,
    tiny_shards: Path,  # noqa: ANN001
) -> None:
    """The launcher compares sizes only (a stat per file): the workers checksum the checkpoint
    they load once, in shares (tests/dist/test_checkpoint_resume_shared.py)."""
    from gppf_dist.preflight.validate import validate_run

    tag_dir = save(tmp_path / "run" / "checkpoints", 4)
    lego = tag_dir / LEGO
    lego.write_bytes(lego.read_bytes()[:-10])
    cfg = compose_run(f"data.root={tiny_shards}", f"run.dir={tmp_path / 'run'}",
                      "resume=step_00000004", "parallel.zero_stage=0")  # fmt: skip
    with pytest.raises(ValueError, match=r"`resume`='step_00000004'.* is damaged: .*lego_00_01"):
        validate_run(cfg, 2)


def test_the_launcher_reads_no_checkpoint_byte(
    tmp_path: Path,
    compose_run,
    tiny_shards: Path,  # noqa: ANN001
) -> None:
    """`validate_run` (the launcher, and each worker before the shared check) stats files but
    hashes nothing, for auto and for never; never still refuses a run.dir with checkpoints."""
    from gppf_dist.checkpoint.digest import bytes_hashed
    from gppf_dist.preflight.validate import validate_run

    save(tmp_path / "run" / "checkpoints", 4)
    common = (f"data.root={tiny_shards}", f"run.dir={tmp_path / 'run'}", "parallel.zero_stage=0")
    before = bytes_hashed()
    validate_run(compose_run(*common, "resume=auto"), 2)
    with pytest.raises(ValueError, match="`resume`=never but `run.dir`="):
        validate_run(compose_run(*common, "resume=never"), 2)
    assert bytes_hashed() == before
