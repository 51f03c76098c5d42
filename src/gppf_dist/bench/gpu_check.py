"""`gppf-bench gpu-check`: what DESIGN.md §6 asks of a GPU, measured in one command (≤ 8 min on
one H100/H200), printed as one JSON object (`--out FILE` writes it there too):

* `throughput`: GPPF-R50 (bf16, channels-last) and GPPF-ViT-B/16 (bf16) at 224 px through the
  real SIMT step (`gppf-bench throughput`): img/s, MFU, peak memory, batch.
* `det_memory`: peak memory of det at 800 px on GPPF-R50 in bf16, batch 1, 2, 4, 8, without
  (`plain`) and with (`checkpointed`) activation checkpointing; a series stops at its first
  out-of-memory error, which it reports as `"oom": true`.
* `host_syncs`: host syncs per SIMT step of the demo model and its 8 tasks: `HostSyncCounter`
  by call site, and on CUDA the warnings of `torch.cuda.set_sync_debug_mode("warn")`.
* `step`: `gppf-bench step --nproc 1 --model gppf_r50 --batch 64 --precision bf16` (SIMT / bare).
* `data`: `gppf-bench data` (decode + augment, one worker per pipeline) on a synthetic corpus.
* `device_path`: pinned batches prefetched on a side stream and CUDA-event timings on the real
  device (`bench/device_path.py`): batches arrive identical; wait per batch against a blocking
  copy.
* `train`: a real `gppf-train` of the demo model (real `TaskLoader`s and prefetcher) on a small
  synthetic corpus: 2 steps and a checkpoint, a resume to step 4, the evaluation after each
  (`eval.json`'s metrics); then one step started as `srun --gpus-per-task=1` starts a rank
  (`launcher=none`, LOCAL_RANK=3, one visible device) through `deepspeed.initialize`.

Every job runs in its own process under a timeout, so an out-of-memory error, a crash or a hang
in one cannot hide the others; a failed job records its error text, and the command exits 1.
Without CUDA it says so on stderr and runs the same jobs with tiny models and sizes and one or
two steps (`--smoke` forces that on a GPU too): a CPU smoke of every code path, run by CI.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from gppf_dist.dist.peak import named_peak_tflops

BUDGET_S = 450.0  # the whole check stays under 8 minutes, start-up included
BF16 = ["--precision", "bf16"]
MODULE = "gppf_dist.bench.gpu_check"


def _settings(smoke: bool) -> dict[str, Any]:
    """Job parameters: the GPU measurement, or the same jobs at CPU-smoke sizes."""
    if not smoke:
        timed = ["--size", "224", "--batch", "256", "--warmup", "5", "--steps", "20", *BF16]
        return {
            "throughput": {
                "r50": ["--model", "gppf_r50", "--channels-last", *timed],
                "vit": ["--model", "gppf_vit_b16", *timed],
            },
            "det": ["--model", "gppf_r50", "--size", "800", "--warmup", "2", "--steps", "2"],
            "det_batches": (1, 2, 4, 8),
            "host_syncs": {"model": "gppf_r50_tiny", "batch": 16, "warmup": 3, "steps": 3},
            "step": ["--nproc", "1", "--model", "gppf_r50", "--batch", "64", *BF16],
            "data": {"seconds": 16.0, "tasks": []},
            "device_path": {"num_batches": 8, "batch": 256, "size": 224},
            "train": {"precision": "bf16"},
            "timeout_s": {
                "throughput": 120,
                "det": 60,
                "host_syncs": 60,
                "step": 150,
                "data": 60,
                "device_path": 60,
                "train": 150,
            },  # fmt: skip
        }
    timed = ["--size", "64", "--batch", "4", "--warmup", "1", "--steps", "2", *BF16]
    return {
        "throughput": {
            "r50": ["--model", "gppf_r50_tiny", "--channels-last", *timed],
            "vit": ["--model", "gppf_vit_tiny", *timed],
        },
        "det": ["--model", "gppf_r50_tiny", "--size", "128", "--warmup", "1", "--steps", "1"],
        "det_batches": (1, 2),
        "host_syncs": {"model": "gppf_r50_tiny", "batch": 4, "warmup": 1, "steps": 1},
        "step": ["--nproc", "1", "--model", "gppf_r50_tiny", "--batch", "4", *BF16]
        + ["--steps", "1", "--blocks", "1", "--warmup", "1", "--threads", "1"],
        "data": {"seconds": 2.0, "tasks": ["cls_object", "det"]},
        "device_path": {"num_batches": 3, "batch": 2, "size": 32},
        "train": {"precision": "fp32"},
        "timeout_s": {
            "throughput": 90,
            "det": 90,
            "host_syncs": 90,
            "step": 120,
            "data": 90,
            "device_path": 60,
            "train": 150,
        },  # fmt: skip
    }


# ---- jobs: each runs in a child process (`--job`), writing its result to `--result` ----------


def _throughput_job(argv: list[str], oom_is_a_result: bool) -> dict[str, Any]:
    from gppf_dist.bench import throughput

    try:
        return throughput.run(argv)
    except torch.cuda.OutOfMemoryError as err:
        if not oom_is_a_result:
            raise
        return {"oom": True, "error": str(err).splitlines()[0]}


def _host_syncs_job(model: str, batch: int, warmup: int, steps: int) -> dict[str, Any]:
    import warnings

    from gppf_dist.bench._procs import join_local_group, time_steps
    from gppf_dist.bench.host_sync import HostSyncCounter, watch_optimizer_step
    from gppf_dist.bench.step import build_setup, simt_runner
    from gppf_dist.dist.env import free_port

    cuda = torch.cuda.is_available()
    device = join_local_group(0, 1, free_port(), 1, "cuda" if cuda else "cpu")
    args = argparse.Namespace(model=model, batch=batch, precision="bf16")
    setup = build_setup(args, device)
    step = simt_runner(setup, args)
    time_steps(step, warmup)
    module, set_step = setup["model"], setup["model"].set_step

    def set_step_outside_the_step(value: int) -> None:
        counter.phase = "set_step"  # the router's once-per-step host copy: before the step
        set_step(value)
        counter.phase = "step"  # from here to the optimizer step: the hot path

    module.set_step = set_step_outside_the_step
    with HostSyncCounter() as counter, watch_optimizer_step(counter, step.engine):
        for _ in range(steps):
            step()  # set_step, then the SIMT step
    hot = counter.hot_path()
    after = [r for r in counter.records if r.phase == "after optimizer step"]
    result: dict[str, Any] = {
        "model": model,
        "tasks": len(setup["specs"]),
        "batch_per_task": batch,
        "steps": steps,
        "per_step": len(hot) / steps,
        "by_site": {site: n / steps for site, n in counter.by_site(hot).most_common()},
        "set_step_per_step": sum(r.phase == "set_step" for r in counter.records) / steps,
        "after_optimizer_step_per_step": len(after) / steps,
        "after_optimizer_step_by_site": {
            site: n / steps for site, n in counter.by_site(after).most_common()
        },
        "cuda_sync_warnings_per_step": None,
        "cuda_sync_warnings_by_site": None,
    }
    if cuda:  # the ground truth; no explicit synchronize inside the window (it would count)
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                for _ in range(steps):
                    step()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
        syncs = [w for w in caught if "synchroniz" in str(w.message)]
        sites: dict[str, float] = {}
        for w in syncs:
            site = f"{_short_path(w.filename)}:{w.lineno}"
            sites[site] = sites.get(site, 0.0) + 1 / steps
        result["cuda_sync_warnings_per_step"] = len(syncs) / steps
        result["cuda_sync_warnings_by_site"] = dict(sorted(sites.items(), key=lambda kv: -kv[1]))
    torch.distributed.destroy_process_group()
    return result


def _short_path(filename: str) -> str:
    for marker in ("/site-packages/", "/src/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def _data_job(seconds: float, tasks: list[str]) -> dict[str, Any]:
    from gppf_dist.bench import data
    from gppf_dist.data.synth.corpus import write_synthetic_corpus

    torch.set_num_threads(1)  # one worker = one core, as `gppf-bench data` runs it
    with tempfile.TemporaryDirectory(prefix="gppf-gpu-check-data-") as tmp:
        manifest = write_synthetic_corpus(
            Path(tmp), samples_per_task=256, val_per_task=8, seed=0, tasks=tasks or None
        )
        result = data.run(Path(tmp), tasks or sorted(manifest.tasks), seconds)
    return {**result, "measured_s": seconds, "cpu_count": os.cpu_count()}


def _steps(run_dir: Path) -> list[dict[str, Any]]:
    """The run's `metrics.jsonl` records (JSON lines)."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _gppf_train(run_dir: Path, shards: Path, overrides: list[str], env: dict[str, str]) -> str:
    """One `gppf-train` of the demo on `shards` (the installed CLI, as a user runs it); its
    output, or RuntimeError with the output's end."""
    cmd = [sys.executable, "-m", "gppf_dist.cli.train", "experiment=demo", f"run.dir={run_dir}",
           f"data.root={shards}", "logger=none", "trainer.progress=false",
           "trainer.eval_at_start=false", "trainer.eval_batch_size=16", *overrides]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd[2:])}: exit {proc.returncode}\n"
                           f"{_tail(proc.stdout + proc.stderr)}")  # fmt: skip
    return proc.stdout


def _train_job(precision: str) -> dict[str, Any]:
    """A real run end to end: 2 steps and a checkpoint, a resume to step 4 (the optimizer state
    restored onto the device), the evaluation at the end of each; then one step started as
    `srun --gpus-per-task=1` starts a rank (`launcher=none`, LOCAL_RANK=3, one visible
    device) through `deepspeed.initialize`."""
    from gppf_dist.data.synth.corpus import write_synthetic_corpus
    from gppf_dist.dist.env import free_port

    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="gppf-gpu-check-train-") as tmp:
        shards, run_dir = Path(tmp, "shards"), Path(tmp, "run")
        write_synthetic_corpus(shards, samples_per_task=64, val_per_task=16, seed=0,
                               samples_per_shard=16)  # fmt: skip
        common = [
            "launcher.nproc=1",
            "trainer.checkpoint_every=2",
            f"trainer.precision={precision}",
        ]
        _gppf_train(run_dir, shards, [*common, "trainer.max_steps=2"], env)
        first_eval = json.loads((run_dir / "eval.json").read_text())
        out = _gppf_train(run_dir, shards, [*common, "trainer.max_steps=4"], env)
        if "resuming from checkpoint at step 2" not in out:
            raise RuntimeError(f"the second run did not resume from step 2:\n{_tail(out)}")
        records = _steps(run_dir)
        final_eval = json.loads((run_dir / "eval.json").read_text())

        srun_env = {**env, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "3",
                    "LOCAL_WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                    "MASTER_PORT": str(free_port())}  # fmt: skip
        if torch.cuda.is_available():  # one visible device, whatever this machine has
            visible = env.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
            srun_env["CUDA_VISIBLE_DEVICES"] = visible
        srun_dir = Path(tmp, "srun")
        _gppf_train(srun_dir, shards, ["launcher=none", "trainer.max_steps=1",
                                       f"trainer.precision={precision}"], srun_env)  # fmt: skip
        srun_steps = [r["step"] for r in _steps(srun_dir)]
    losses = [r["loss"] for r in records]
    if [r["step"] for r in records] != [1, 2, 3, 4] or not all(map(math.isfinite, losses)):
        raise RuntimeError(
            f"steps/losses after the resume: {[(r['step'], r['loss']) for r in records]}"
        )
    return {
        "steps": 4,
        "resumed_at": 2,
        "losses": losses,
        "eval_after_2": first_eval["tasks"],
        "eval_after_4": final_eval["tasks"],
        "srun_like": {
            "local_rank": 3,
            "visible_devices": srun_env.get("CUDA_VISIBLE_DEVICES"),
            "steps": srun_steps,
        },  # fmt: skip
        "precision": precision,
    }


def _run_job(job: dict[str, Any]) -> dict[str, Any]:
    kind = job["kind"]
    if kind == "throughput":
        return _throughput_job(job["argv"], job.get("oom_is_a_result", False))
    if kind == "host_syncs":
        return _host_syncs_job(job["model"], job["batch"], job["warmup"], job["steps"])
    if kind == "step":
        from gppf_dist.bench import step

        return step.run(step.parse_args(job["argv"]))
    if kind == "data":
        return _data_job(job["seconds"], job["tasks"])
    if kind == "device_path":
        from gppf_dist.bench import device_path

        return device_path.run(job["num_batches"], job["batch"], job["size"])
    if kind == "train":
        return _train_job(job["precision"])
    if kind == "memory":
        from gppf_dist.bench import memory

        return {"check": memory.check(memory.GPU_SHAPES), "command": "gppf-bench memory --check"}
    raise ValueError(f"job kind {kind!r}: unknown")


# ---- the parent: environment, jobs in child processes, one summary --------------------------


class Runner:
    """Runs jobs one at a time in child processes within one overall time budget."""

    def __init__(self, budget_s: float, env: dict[str, str]) -> None:
        self.deadline = time.monotonic() + budget_s
        self.env = env
        self.failed: list[str] = []

    def __call__(self, name: str, job: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        timeout_s = min(timeout_s, self.deadline - time.monotonic())
        print(f"gpu-check: {name} ...", file=sys.stderr, flush=True)
        start = time.monotonic()
        if timeout_s <= 1:
            result = {"ok": False, "error": "not run: the check's time budget ran out"}
        else:
            result = self._child(job, timeout_s)
        result["seconds"] = round(time.monotonic() - start, 2)
        if "argv" in job:  # the benchmark command that reproduces this result
            result["command"] = shlex.join(["gppf-bench", job["kind"], *job["argv"]])
        if not result["ok"]:
            self.failed.append(name)
        status = "ok" if result["ok"] else f"FAILED: {result['error'].splitlines()[-1]}"
        print(f"gpu-check: {name} {status} ({result['seconds']} s)", file=sys.stderr, flush=True)
        return result

    def _child(self, job: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="gppf-gpu-check-") as tmp:
            out = Path(tmp) / "result.json"
            proc = subprocess.Popen(
                [sys.executable, "-m", MODULE, "--job", json.dumps(job), "--result", str(out)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=self.env,
                start_new_session=True,  # so a timeout ends the job's own children too
            )
            try:
                log, _ = proc.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                log, _ = proc.communicate()
                return {"ok": False, "error": f"{_tail(log)}\ntimed out after {timeout_s:.0f} s"}
            if proc.returncode != 0 or not out.is_file():
                return {"ok": False, "error": f"{_tail(log)}\nexit status {proc.returncode}"}
            return {"ok": True, **json.loads(out.read_text())}


def _tail(log: str, lines: int = 25) -> str:
    return "\n".join(log.strip().splitlines()[-lines:])[-3000:]


def _environment(peak_tflops: float | None, smoke: bool) -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    if cuda:
        device = torch.cuda.get_device_name(0)
        peak = peak_tflops or named_peak_tflops(device)
    else:
        device, peak = f"cpu: {_cpu_name()}", peak_tflops
    return {
        "cuda": cuda,
        "device": device,
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "smoke": smoke or not cuda,
        "cpu_count": os.cpu_count(),
        "peak_tflops": peak,
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def check(peak_tflops: float | None, smoke: bool, budget_s: float) -> dict[str, Any]:
    start = time.monotonic()
    summary = _environment(peak_tflops, smoke)
    env = dict(os.environ)
    if summary["cuda"] and env.get("DS_ACCELERATOR") == "cpu":  # a CPU default left behind
        print("gpu-check: ignoring DS_ACCELERATOR=cpu: CUDA is here", file=sys.stderr)
        del env["DS_ACCELERATOR"]
    if not summary["cuda"]:
        print("gpu-check: no CUDA device: running the CPU smoke", file=sys.stderr, flush=True)
    cfg = _settings(summary["smoke"])
    timeouts = cfg["timeout_s"]
    peak = ["--peak-tflops", str(summary["peak_tflops"])] if summary["peak_tflops"] else []
    run = Runner(budget_s, env)
    summary["throughput"] = {}
    for key, argv in cfg["throughput"].items():
        job = {"kind": "throughput", "argv": [*argv, *peak]}
        summary["throughput"][key] = run(f"throughput.{key}", job, timeouts["throughput"])
    det: dict[str, Any] = {}
    det_argv = [*cfg["det"], "--task", "det", "--channels-last", *BF16]
    for series, flag in (("plain", []), ("checkpointed", ["--activation-checkpointing"])):
        det[series] = []
        for batch in cfg["det_batches"]:
            argv = [*det_argv, "--batch", str(batch), *flag]
            job = {"kind": "throughput", "argv": argv, "oom_is_a_result": True}
            point = run(f"det_memory.{series}.batch{batch}", job, timeouts["det"])
            det[series].append({"batch": batch, **point})
            if point.get("oom"):
                break
    summary["det_memory"] = det
    job = {"kind": "host_syncs", **cfg["host_syncs"]}
    summary["host_syncs"] = run("host_syncs", job, timeouts["host_syncs"])
    summary["step"] = run("step", {"kind": "step", "argv": cfg["step"]}, timeouts["step"])
    summary["data"] = run("data", {"kind": "data", **cfg["data"]}, timeouts["data"])
    tasks = [arg for task in cfg["data"]["tasks"] for arg in ("--task", task)]
    summary["data"]["command"] = shlex.join(
        ["gppf-bench", "data", "--seconds", str(cfg["data"]["seconds"]), *tasks]
    )
    job = {"kind": "device_path", **cfg["device_path"]}
    summary["device_path"] = run("device_path", job, timeouts["device_path"])
    summary["train"] = run("train", {"kind": "train", **cfg["train"]}, timeouts["train"])
    if summary["cuda"]:  # predicted vs measured peaks of real models (CPU: `make test` checks)
        summary["memory"] = run("memory", {"kind": "memory"}, timeouts.get("memory", 300))
    summary["failed"] = run.failed
    summary["wall_s"] = round(time.monotonic() - start, 1)
    return summary


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="gppf-bench gpu-check", description=__doc__)
    p.add_argument("--out", type=Path, help="also write the JSON summary to this file")
    p.add_argument("--peak-tflops", type=float, help="device peak for MFU (default: by name)")
    p.add_argument("--smoke", action="store_true", help="tiny settings even on a GPU")
    p.add_argument("--budget-s", type=float, default=BUDGET_S, help="overall time limit")
    p.add_argument("--job", help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.job:  # a child: one job, its result to a file
        args.result.write_text(json.dumps(_run_job(json.loads(args.job))))
        return
    summary = check(args.peak_tflops, args.smoke, args.budget_s)
    text = json.dumps(summary, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text, flush=True)
    if summary["failed"]:
        print(f"gpu-check: failed: {', '.join(summary['failed'])}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
