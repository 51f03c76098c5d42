"""One writer and one scanner per node (`health/heartbeat.py`, `health/watchdog.py`): ranks beat
into a node-local folder, the node's lowest live rank publishes them all as one file in the
shared folder, a stopped rank's stale beat is published by the next rank up, and of a node's
ranks that wait past their allowance only the lowest live one scans."""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pytest

from gppf_dist.health.heartbeat import (
    Beat,
    local_directory,
    node_path,
    publisher,
    read_beats,
    write_beat,
)
from gppf_dist.health.watchdog import Watchdog


@pytest.fixture(autouse=True)
def local_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    base = tmp_path / "node-local"
    monkeypatch.setenv("GPPF_LOCAL_HEARTBEAT_DIR", str(base))
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "nodes")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    return base


def in_node_file(shared: Path, host: str) -> dict[int, dict[str, object]]:
    """The beats of the node's file in the shared folder only (not the local folder, which
    `read_beats` reads too on this node)."""
    try:
        listed = json.loads(node_path(shared, host).read_text())
    except (OSError, ValueError):
        return {}
    return {b["rank"]: b for b in listed["beats"]}


def wait_for(predicate: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_a_node_publishes_one_file_for_all_its_ranks(tmp_path: Path, local_base: Path) -> None:
    dogs = [Watchdog(tmp_path, rank=r, world_size=3, timeout_s=600) for r in range(3)]
    shared = tmp_path / "heartbeat"
    for dog in dogs:
        dog.__enter__()
    try:
        for r, dog in enumerate(dogs):
            dog.enter("forward", "det", done=10 + r)
        assert local_directory(shared).parent == local_base
        node = node_path(shared, dogs[0].host)

        def published() -> bool:
            beats = in_node_file(shared, dogs[0].host)
            return all(r in beats and beats[r]["done"] == 10 + r for r in range(3))

        assert wait_for(published)
        assert sorted(p.name for p in shared.iterdir()) == [node.name]  # no per-rank files
    finally:
        for dog in dogs:
            dog.__exit__(None, None, None)
    assert {b["kind"] for b in in_node_file(shared, dogs[0].host).values()} == {"finished"}
    assert sorted(p.name for p in shared.iterdir()) == [node.name]
    assert not local_directory(shared).exists()  # a clean end leaves nothing on the node


def test_a_failed_end_leaves_the_local_beats_for_the_launcher(tmp_path: Path) -> None:
    dog = Watchdog(tmp_path, rank=0, world_size=1, timeout_s=600)
    dog.__enter__()
    dog.enter("forward", "det", done=3)
    dog.__exit__(ValueError, ValueError("boom"), None)
    local = local_directory(tmp_path / "heartbeat")
    assert [p.name for p in local.glob("rank_*.json")] == ["rank_00000.json"]
    assert read_beats(tmp_path / "heartbeat", 1)[0].kind == "forward"


def test_the_next_rank_publishes_a_stopped_ranks_stale_beat(tmp_path: Path) -> None:
    """Rank 0's watchdog is silent (its process stopped): rank 1 becomes the publisher, and the
    node file still carries rank 0's last beat, old, so the rank is named, not its node."""
    shared = tmp_path / "heartbeat"
    dog = Watchdog(tmp_path, rank=1, world_size=2, timeout_s=600)
    local = local_directory(shared)
    local.mkdir(parents=True)
    stale = Beat(0, os.getpid() + 1, dog.host, dog.attempt, 6, "forward", "det",
                 time.time() - 90, time.time() - 60)  # fmt: skip
    write_beat(local, stale)
    assert publisher([stale, replace(stale, rank=1, at=time.time())], time.time()) == 1
    with dog:
        dog.enter("gradient all-reduce", done=6)
        assert wait_for(lambda: in_node_file(shared, dog.host).get(1, {}).get("kind")
                        == "gradient all-reduce")  # fmt: skip
        assert in_node_file(shared, dog.host)[0]["at"] == stale.at
        assert read_beats(shared, 2)[0] == stale


def test_one_scanner_per_node_among_the_live_waiting_ranks(tmp_path: Path) -> None:
    shared = tmp_path / "heartbeat"
    dog = Watchdog(tmp_path, rank=1, world_size=3, timeout_s=20)
    local = local_directory(shared)
    local.mkdir(parents=True)
    now = time.time()
    waiting = Beat(0, 1, dog.host, dog.attempt, 6, "gradient all-reduce", "", now - 60, now)
    write_beat(local, replace(waiting, rank=1, pid=2))
    write_beat(local, waiting)
    assert not dog._is_scanner()  # rank 0 waits too, and its watchdog lives: it scans
    write_beat(local, replace(waiting, at=now - 30))
    assert dog._is_scanner()  # rank 0's watchdog is silent: rank 1 scans
    write_beat(local, replace(waiting, since=now, at=now))
    assert dog._is_scanner()  # rank 0 is busy, not waiting
    write_beat(local, replace(waiting, attempt="other/0"))
    assert dog._is_scanner()  # another attempt's leftover


def test_without_a_setting_the_local_folder_is_on_tmpfs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GPPF_LOCAL_HEARTBEAT_DIR")
    local = local_directory(tmp_path / "run" / "heartbeat")
    if os.access("/dev/shm", os.W_OK):
        assert local.parent == Path("/dev/shm")
    else:
        assert local.parent == Path(tempfile.gettempdir())
    assert local != local_directory(tmp_path / "other" / "heartbeat")
