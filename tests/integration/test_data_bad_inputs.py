"""Bad shard content planted in a real 2-process `gppf-train` run is skipped, counted, survived.

Every kind of bad input from the issue goes into the train shards of the tiny corpus (one task
each, so the per-task counts in metrics.jsonl show each was reached); the manifest is updated so
start-up checks pass. A missing shard file or a size mismatch must instead fail at start, naming
the file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from gppf_dist.logging.metrics import read_metrics

TRAIN = str(Path(sys.executable).parent / "gppf-train")
Members = list[tuple[str, bytes]]


class _Exploit:
    """Unpickling this would create a file: proves pickle members are never loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., int], tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def _members(path: Path) -> Members:
    with tarfile.open(path) as tar:
        out = []
        for m in tar.getmembers():
            f = tar.extractfile(m)
            assert f is not None
            out.append((m.name, f.read()))
        return out


def _write(path: Path, members: Members) -> None:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _edit_json(members: Members, index: int, edit: Callable[[dict], None]) -> Members:
    jsons = [i for i, (n, _) in enumerate(members) if n.endswith(".json")]
    name, data = members[jsons[index]]
    ann = json.loads(data)
    edit(ann)
    members[jsons[index]] = (name, json.dumps(ann).encode())
    return members


def _plant(root: Path, marker: Path) -> None:
    """One kind of bad input per task, in train shard 0 (attr: the tar is truncated)."""

    def corrupt_jpeg(m: Members) -> Members:
        i = next(i for i, (n, _) in enumerate(m) if n.endswith(".jpg"))
        m[i] = (m[i][0], m[i][1][:40] + b"\x00" * 64)
        return m

    def missing_member(m: Members) -> Members:
        return [x for i, x in enumerate(m) if not (x[0].endswith(".json") and i < 6)]

    def out_of_bounds(m: Members) -> Members:
        return _edit_json(m, 2, lambda a: a.update(boxes=[[0, 0, 5000, 5000]], labels=[0]))

    def wrong_schema(m: Members) -> Members:
        return _edit_json(m, 1, lambda a: a.update(keypoints="nose"))

    def unsafe_name(m: Members) -> Members:
        return [(f"../{n}" if n.startswith(m[0][0].split(".")[0]) else n, d) for n, d in m]

    def pickle_member(m: Members) -> Members:
        evil = pickle.dumps(_Exploit(marker))
        key = m[0][0].split(".")[0]
        m.insert(1, (f"{key}.pyd", evil))  # a good sample carrying an extra pickle member
        jpg = next(i for i, (n, _) in enumerate(m) if n.endswith(".jpg") and key not in n)
        m[jpg] = (m[jpg][0].replace(".jpg", ".pth"), evil)  # a sample whose image is a pickle
        return m

    def missing_mask(m: Members) -> Members:
        return [x for x in m if not x[0].endswith(".png")][:3] + m[4:]

    plants = {
        "cls_object": corrupt_jpeg,
        "cls_scene": missing_member,
        "det": out_of_bounds,
        "pose": wrong_schema,
        "reid": unsafe_name,
        "face": pickle_member,
        "seg": missing_mask,
    }
    manifest_path = root / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for task, entry in manifest["tasks"].items():
        shard = entry["splits"]["train"][0]
        path = root / shard["path"]
        if task == "attr":
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2 + 100])  # truncated mid-shard
        else:
            _write(path, plants[task](_members(path)))
        shard["bytes"] = path.stat().st_size
        shard["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest, indent=2))


def _train(run_dir: Path, shards: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        TRAIN,
        "experiment=demo",
        f"run.dir={run_dir}",
        f"data.root={shards}",
        "logger=none",
        "trainer.progress=false",
        "trainer.eval_batch_size=16",
        "trainer.eval_at_start=false",
        "launcher.nproc=2",
        *overrides,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_planted_bad_inputs_are_skipped_and_counted(tmp_path: Path, tiny_shards: Path) -> None:
    shards = tmp_path / "shards"
    shutil.copytree(tiny_shards, shards)
    marker = tmp_path / "unpickled"
    _plant(shards, marker)
    # 8 steps: one whole epoch of the 8-per-step tasks, two of the 16-per-step ones
    proc = _train(tmp_path / "run", shards, "trainer.max_steps=8", "trainer.checkpoint_every=8")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 9))
    last = records[-1]
    skipped = {
        t: last[f"data/skipped/{t}"]
        for t in json.loads((shards / "manifest.json").read_text())["tasks"]
    }
    for task, count in skipped.items():
        assert count >= 1, (task, skipped)
    assert skipped["attr"] >= 2  # the truncated shard itself, and each sample missing from it
    assert not marker.exists(), "a pickle member was unpickled"
    logs = proc.stdout + proc.stderr
    for reason in ("decode", "missing_member", "annotation", "unsafe_path", "truncated_shard"):
        assert f"[{reason}]" in logs, reason


@pytest.mark.parametrize("damage", ["missing", "resized"])
def test_missing_or_mismatched_shard_fails_at_start(
    tmp_path: Path, tiny_shards: Path, damage: str
) -> None:
    shards = tmp_path / "shards"
    shutil.copytree(tiny_shards, shards)
    victim = shards / "seg" / "train"
    path = sorted(victim.iterdir())[1]
    if damage == "missing":
        path.unlink()
    else:
        path.write_bytes(path.read_bytes() + b"\x00" * 512)
    proc = _train(tmp_path / "run", shards, "trainer.max_steps=1")
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert str(path) in out, out[-3000:]
    assert ("does not exist" if damage == "missing" else "manifest says") in out
    assert not (tmp_path / "run" / "config.yaml").exists()  # failed before any worker
