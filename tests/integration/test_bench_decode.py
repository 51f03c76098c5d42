"""`gppf-bench decode --json`: our decode + augment path against the Pillow path, per task type.

A short run (few images, one round) checks the report's shape and that both paths ran; the
figures themselves, and the ratio target, are recorded with their command in BENCHMARKS.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = str(Path(sys.executable).parent / "gppf-bench")


def test_decode_bench_reports_ratio_rates_and_cores_per_gpu() -> None:
    args = ["decode", "--json", "--images", "3", "--rounds", "1"]
    args += ["--task", "classification", "--task", "segmentation", "--task", "pose"]
    proc = subprocess.run([BENCH, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, proc.stdout[-2000:]
    result = json.loads(lines[0])
    assert result["ratio"] > 0 and result["image_size"] == [500, 375]
    assert 40 < result["jpeg_kb"] < 200  # real-size photos, not thumbnails
    assert sorted(result["tasks"]) == ["classification", "pose", "segmentation"]
    for row in result["tasks"].values():
        assert row["ours_img_s"] > 0 and row["pillow_img_s"] > 0
        assert row["ratio"] == row["ours_img_s"] / row["pillow_img_s"]
        assert row["cores_per_gpu"] == result["gpu_img_s"] / row["ours_img_s"]
    assert result["tasks"]["classification"]["decode_scale"] == "5/8"  # 224 px from 500x375
    assert result["tasks"]["segmentation"]["decode_scale"] == "8/8"  # 512 px: full size
    time_ours = sum(1 / r["ours_img_s"] for r in result["tasks"].values())
    time_pillow = sum(1 / r["pillow_img_s"] for r in result["tasks"].values())
    assert abs(result["ratio"] - time_pillow / time_ours) < 1e-9


def test_decode_bench_table() -> None:
    args = ["decode", "--images", "2", "--rounds", "1", "--task", "face"]
    proc = subprocess.run([BENCH, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "face" in proc.stdout and "cores per GPU at 3000 img/s" in proc.stdout
