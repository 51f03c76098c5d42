"""`gppf-bench gpu-check --smoke` (what a machine without CUDA runs by itself): every job of the
GPU check (the real SIMT step, checkpointing, the host-sync counter, the step and data
benchmarks) at tiny sizes, and one JSON summary with every section in it.

`--peak-tflops` is given so that the MFU path runs too (a CPU has no known peak).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from gppf_dist.bench.gpu_check import Runner

BENCH = str(Path(sys.executable).parent / "gppf-bench")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, Path]:
    out = tmp_path_factory.mktemp("gpu_check") / "runs" / "gpu-check.json"
    cmd = [BENCH, "gpu-check", "--smoke", "--out", str(out), "--peak-tflops", "0.5"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout), proc.stderr, out


def positive(*values: Any) -> bool:
    return all(isinstance(v, int | float) and v > 0 for v in values)


def test_summary_says_where_it_ran(smoke: tuple[dict[str, Any], str, Path]) -> None:
    summary, stderr, out = smoke
    assert json.loads(out.read_text()) == summary  # --out holds the printed summary
    assert summary["cuda"] is torch.cuda.is_available()
    assert summary["cuda"] or "no CUDA device" in stderr
    assert summary["smoke"] and (summary["cuda"] or summary["device"].startswith("cpu"))
    assert summary["torch"] == torch.__version__ and summary["date"][:2] == "20"
    assert summary["peak_tflops"] == 0.5 and summary["cpu_count"] == os.cpu_count()
    assert summary["failed"] == [] and positive(summary["wall_s"])


def test_throughput_of_both_families(smoke: tuple[dict[str, Any], str, Path]) -> None:
    throughput = smoke[0]["throughput"]
    assert set(throughput) == {"r50", "vit"}
    for key, family in (("r50", "gppf_r50"), ("vit", "gppf_vit")):
        result = throughput[key]
        assert result["ok"] and result["config"]["model"].startswith(family), result
        assert positive(result["img_per_s"], result["mfu"], result["peak_mem_gib"])
        assert positive(result["batch"], result["train_gflop_per_img"], result["seconds"])
        assert result["config"]["precision"] == "bf16"
    assert throughput["r50"]["config"]["channels_last"]


def test_det_memory_with_and_without_checkpointing(
    smoke: tuple[dict[str, Any], str, Path],
) -> None:
    det = smoke[0]["det_memory"]
    for series, checkpointed in (("plain", False), ("checkpointed", True)):
        points = det[series]
        assert [p["batch"] for p in points] == [1, 2], points
        for point in points:
            assert point["ok"] and not point.get("oom"), point
            assert point["config"]["task"] == "det"
            assert point["config"]["activation_checkpointing"] is checkpointed
            assert positive(point["peak_mem_gib"], point["img_per_s"])


def test_host_syncs_step_and_data(smoke: tuple[dict[str, Any], str, Path]) -> None:
    summary = smoke[0]
    syncs = summary["host_syncs"]
    assert syncs["ok"] and syncs["tasks"] == 8, syncs
    # none on the hot path; after the optimizer step, the step's one documented copy
    assert syncs["per_step"] == 0 and syncs["by_site"] == {}, syncs["by_site"]
    documented = [s for s in syncs["after_optimizer_step_by_site"] if "engine/step.py" in s]
    assert len(documented) == 1 and documented[0].startswith("tolist"), documented
    if not summary["cuda"]:  # CUDA's own count needs CUDA
        assert syncs["cuda_sync_warnings_per_step"] is None
    step = summary["step"]
    assert step["ok"] and step["nproc"] == 1 and step["precision"] == "bf16", step
    assert positive(step["ratio"], step["simt_step_s"], step["bare_step_s"], step["warmup"])
    data = summary["data"]
    assert data["ok"] and positive(data["ratio"]), data
    assert all(positive(v["ours"], v["plain"]) for v in data["tasks"].values())
    path = summary["device_path"]
    assert path["ok"] and path["identical"] and path["positions_after"] == {"0": 3}, path
    assert positive(path["compute_s_event_timed"])


def test_a_real_run_checkpoints_resumes_evaluates_and_starts_as_srun_does(
    smoke: tuple[dict[str, Any], str, Path],
) -> None:
    """The `train` job: gppf-train for 2 steps, then resumed to 4 (the output said so, or the
    job fails), an evaluation after each, then a rank started with LOCAL_RANK=3 alone."""
    train = smoke[0]["train"]
    assert train["ok"] and train["steps"] == 4 and train["resumed_at"] == 2, train
    assert len(train["losses"]) == 4 and positive(*train["losses"])
    tasks = ["attr", "cls_object", "cls_scene", "det", "face", "pose", "reid", "seg"]
    assert sorted(train["eval_after_2"]) == sorted(train["eval_after_4"]) == tasks
    assert train["srun_like"]["local_rank"] == 3 and train["srun_like"]["steps"] == [1]


def test_a_failing_job_is_recorded_and_counted() -> None:
    run = Runner(budget_s=120, env=dict(os.environ))
    result = run("broken", {"kind": "no-such-job"}, timeout_s=60)
    assert not result["ok"] and "no-such-job" in result["error"]
    assert run.failed == ["broken"]
    out_of_time = Runner(budget_s=0, env=dict(os.environ))
    assert "budget" in out_of_time("late", {"kind": "data"}, timeout_s=60)["error"]
    assert out_of_time.failed == ["late"]


def test_an_out_of_memory_error_ends_a_det_series_but_fails_a_throughput_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gppf_dist.bench import gpu_check, throughput

    def out_of_memory(argv: list[str]) -> dict[str, Any]:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(throughput, "run", out_of_memory)
    assert gpu_check._throughput_job([], oom_is_a_result=True)["oom"]
    with pytest.raises(torch.cuda.OutOfMemoryError):
        gpu_check._throughput_job([], oom_is_a_result=False)

    ran: list[str] = []

    class FakeRunner:  # det runs out of memory from batch 4 on; every other job succeeds
        def __init__(self, budget_s: float, env: dict[str, str]) -> None:
            self.failed: list[str] = []

        def __call__(self, name: str, job: dict[str, Any], timeout_s: float) -> dict[str, Any]:
            ran.append(name)
            argv = job.get("argv", [])
            oom = "det" in argv and int(argv[argv.index("--batch") + 1]) >= 4
            return {"ok": True, "oom": True} if oom else {"ok": True}

    settings = gpu_check._settings
    monkeypatch.setattr(gpu_check, "Runner", FakeRunner)
    monkeypatch.setattr(
        gpu_check, "_settings", lambda smoke: {**settings(smoke), "det_batches": (1, 2, 4, 8)}
    )
    summary = gpu_check.check(None, smoke=True, budget_s=60)
    for series in ("plain", "checkpointed"):
        points = summary["det_memory"][series]
        assert [(p["batch"], p.get("oom", False)) for p in points] == [
            (1, False),
            (2, False),
            (4, True),
        ]
    assert not any(name.endswith("batch8") for name in ran)
    assert summary["failed"] == [] and {"host_syncs", "step", "data"} <= set(ran)
