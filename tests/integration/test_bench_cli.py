"""`gppf-bench {data,step,ep} --json` each print one JSON object with a positive `ratio`;
`gppf-bench throughput --json` its images per second, training FLOPs per image and MFU.

Short settings keep this a smoke test of the real benchmark code paths (spawned gloo processes,
DeepSpeed engine and MoE, our loader and plain webdataset); the figures themselves are recorded
with their commands in BENCHMARKS.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = str(Path(sys.executable).parent / "gppf-bench")


@pytest.mark.parametrize(
    "args",
    [
        ["data", "--json", "--seconds", "2", "--task", "cls_object", "--task", "det"],
        ["step", "--json", "--steps", "2", "--blocks", "1"],
        ["ep", "--json", "--steps", "2", "--blocks", "1", "--tokens", "64"],
        ["placement", "--json", "--cases", "20"],
    ],
    ids=["data", "step", "ep", "placement"],
)
def test_bench_prints_one_json_object_with_a_ratio(args: list[str]) -> None:
    proc = subprocess.run([BENCH, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, proc.stdout[-2000:]
    result = json.loads(lines[0])
    assert result["ratio"] > 0
    if args[0] == "placement":  # never predicted worse than the contiguous split
        assert result["worse_cases"] == 0 and result["ratio"] >= 1
    if args[0] == "ep":
        per_rank = result["lego_bytes_per_rank"]
        assert per_rank["e2"] * 2 == per_rank["e1"]


def test_throughput_reports_images_per_second_flops_and_mfu() -> None:
    args = ["throughput", "--json", "--model", "gppf_r50_tiny", "--size", "64", "--batch", "4"]
    args += ["--steps", "2", "--warmup", "1", "--channels-last", "--peak-tflops", "1"]
    proc = subprocess.run([BENCH, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    result = json.loads(lines[-1])
    assert result["img_per_s"] == pytest.approx(4 / result["step_s"])
    assert result["train_gflop_per_img"] > 0
    expected_mfu = result["img_per_s"] * result["train_gflop_per_img"] / 1000
    assert result["mfu"] == pytest.approx(expected_mfu)
    assert result["config"]["precision"] == "bf16" and result["config"]["channels_last"]


def test_plan_simulator_on_the_reference_profile() -> None:
    """1,024 ranks: balanced (>= 0.97) with no idle rank; 4,096 ranks planned in <= 50 ms."""
    out = {}
    for world in (1024, 4096):
        proc = subprocess.run(
            [BENCH, "plan", "--world", str(world), "--json"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[world] = json.loads(proc.stdout)
    big = out[1024]
    assert big["efficiency"] >= 0.97 and big["idle_ranks"] == 0
    assert 1.0 <= big["read_amplification"] <= 1.5 and big["allreduce_bytes_per_rank"] > 0
    assert big["step_ms"] >= big["compute_ms"] > 0
    assert out[4096]["plan_ms"] <= 50.0
    assert out[4096]["idle_ranks"] == 0


def test_transfer_reports_downstream_top1_per_model_and_tune(tmp_path: Path) -> None:
    """One task, one seed, a few steps: the JSON's shape, every top-1 in [0, 1], both
    pre-training runs evaluated on the 8 tasks (not that pre-training wins: too noisy here)."""
    args = ["transfer", "--json", "--tasks", "count", "--seeds", "1", "--steps", "4"]
    args += ["--pretrain-steps", "2", "--train-per-task", "60", "--test-per-task", "30"]
    args += ["--out", str(tmp_path / "work")]
    proc = subprocess.run([BENCH, *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, proc.stdout[-2000:]
    result = json.loads(lines[0])
    assert set(result["tasks"]) == {"count"}
    entry = result["tasks"]["count"]
    for tune in ("linear", "path"):
        for model in ("pretrained", "scratch", "dense"):
            assert 0.0 <= entry[tune][model] <= 1.0
            assert entry[tune]["std"][model] == 0.0  # one seed
            assert entry[tune]["runs"][model] == [entry[tune][model]]
    for model in ("pretrained", "scratch", "dense"):
        assert entry[model] == entry["path"][model]
    assert all(r.startswith("auto:") for r in entry["routes"]["path"])
    for name in ("gppf", "dense"):
        assert len(result["pretraining"][name]) == 8
    assert result["pretraining"]["gppf"]["cls_object"]["top1"] >= 0.0
    assert result["config"]["finetunes"] == 6 and result["seconds"] > 0
    assert (tmp_path / "work" / "export" / "gppf" / "model.safetensors").is_file()
