"""The real sbatch script and `gppf-train launcher=slurm` on one node of the local Slurm.

Start the cluster first (root): `launch/slurm/local_cluster.sh` (two nodes; the two-node jobs are
in test_cluster_slurm_two_nodes.py). Without Slurm these tests skip and say so (or fail, with
GPPF_REQUIRE_SLURM=1 as in CI); as root with Slurm installed but not running, the fixture starts
it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from gppf_dist.logging.metrics import read_metrics

from .test_train_cli import TRAIN

REPO = Path(__file__).resolve().parents[2]
SBATCH = REPO / "launch" / "slurm" / "gppf.sbatch"
CLUSTER = REPO / "launch" / "slurm" / "local_cluster.sh"
UP_STATES = ("idle", "mix", "alloc", "comp")


def _cluster_up() -> bool:
    out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    states = out.stdout.split() if out.returncode == 0 else []
    return any(s.rstrip("*~#") in UP_STATES for s in states)


def _unavailable(reason: str) -> None:
    """Skip; but fail where Slurm is required (CI sets GPPF_REQUIRE_SLURM=1)."""
    if os.environ.get("GPPF_REQUIRE_SLURM") == "1":
        pytest.fail(f"GPPF_REQUIRE_SLURM=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def slurm() -> None:
    """Skip unless a Slurm cluster answers; as root, start the local one if it is down."""
    if shutil.which("sbatch") is None:
        _unavailable("Slurm not installed (no sbatch); run `launch/slurm/local_cluster.sh` as root")
    if not _cluster_up() and os.geteuid() == 0 and shutil.which("slurmctld"):
        subprocess.run([str(CLUSTER)], check=False, timeout=120)
    if not _cluster_up():
        _unavailable("no Slurm node is up; start one with `launch/slurm/local_cluster.sh` (root)")


def job_fields(job_id: str) -> dict[str, str]:
    out = subprocess.run(
        ["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, timeout=30
    ).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def wait_for_job(job_id: str, timeout: float, on_pending_requeue: bool = True) -> dict[str, str]:
    """Poll until the job has ended. A requeued job is held ~2 min by slurmctld before it is
    eligible again; tests don't need to watch that delay, so they move its start time to now."""
    deadline = time.time() + timeout
    requeued_at = None
    while time.time() < deadline:
        fields = job_fields(job_id)
        state = fields.get("JobState", "")
        if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            return fields
        if on_pending_requeue and state == "PENDING" and fields.get("Restarts", "0") != "0":
            requeued_at = requeued_at or time.time()
            # slurmd may still be tearing down the previous attempt's step for a few seconds;
            # starting again before that revokes the new attempt's credential (the hold exists
            # for this), so only shorten the hold once that is surely over.
            if time.time() - requeued_at > 20:
                subprocess.run(
                    ["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=False
                )
        time.sleep(2)
    subprocess.run(["scancel", job_id], check=False)
    raise AssertionError(f"job {job_id} did not end within {timeout}s: {job_fields(job_id)}")


def submit(
    tmp_path: Path,
    shards: Path,
    *overrides: str,
    sbatch_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> str:
    """sbatch the script with the demo's overrides; `sbatch_args` go before the script, `env`
    is added to the job's environment."""
    job_env = {
        **os.environ,
        "GPPF_RUN_ROOT": str(tmp_path / "runs"),
        "GPPF_PYTHON": sys.executable,
        **(env or {}),
    }
    cmd = ["sbatch", "--parsable", *sbatch_args, str(SBATCH), "experiment=demo"]
    cmd.append(f"data.root={shards}")
    cmd += ["logger=none", "trainer.progress=false", "trainer.eval_batch_size=16", *overrides]
    proc = subprocess.run(
        cmd, cwd=tmp_path, env=job_env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


def job_log(tmp_path: Path, job_id: str) -> str:
    return (tmp_path / f"gppf-{job_id}.out").read_text(errors="replace")


def preempt_and_requeue(tmp_path: Path, job: str, max_steps: int) -> str:
    """Once the job has logged 3 steps, do what Slurm does 120 s before the time limit
    (--signal=B:USR1@120): USR1 to the batch shell. Check that the job checkpointed, was requeued
    once, resumed and completed with every step once; return its log."""
    metrics = tmp_path / "runs" / f"slurm-{job}" / "metrics.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline and job_fields(job).get("JobState") in ("PENDING", "RUNNING"):
        if metrics.exists() and len(read_metrics(metrics)) >= 3:
            break
        time.sleep(0.5)
    assert metrics.exists(), job_log(tmp_path, job)[-4000:]
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], check=True)
    fields = wait_for_job(job, timeout=900)
    log = job_log(tmp_path, job)
    assert fields["JobState"] == "COMPLETED", log[-4000:]
    assert fields["Restarts"] == "1", fields
    assert "preempted: stopped after step" in log, log[-4000:]
    assert "requeueing job" in log and "resuming from checkpoint at step" in log
    steps = [r["step"] for r in read_metrics(metrics)]
    assert steps == list(range(1, max_steps + 1))  # none lost, none repeated
    return log


def test_sbatch_script_trains_the_demo(slurm: None, tmp_path: Path, tiny_shards: Path) -> None:
    job = submit(tmp_path, tiny_shards, "trainer.max_steps=3")
    fields = wait_for_job(job, timeout=900)
    log = job_log(tmp_path, job)
    assert fields["JobState"] == "COMPLETED", log[-4000:]
    run_dir = tmp_path / "runs" / f"slurm-{job}"  # keyed by SLURM_JOB_ID
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [1, 2, 3]
    assert (run_dir / "eval.json").is_file()
    assert "2 process(es)" in log  # the CPU fallback, with no extra flags


def test_usr1_checkpoints_requeues_and_resumes(
    slurm: None, tmp_path: Path, tiny_shards: Path
) -> None:
    max_steps = 30
    job = submit(
        tmp_path,
        tiny_shards,
        f"trainer.max_steps={max_steps}",
        "trainer.checkpoint_every=1000",
        "trainer.eval_at_start=false",
    )
    preempt_and_requeue(tmp_path, job, max_steps)


def test_gppf_train_launcher_slurm_submits_and_waits(
    slurm: None, tmp_path: Path, tiny_shards: Path
) -> None:
    run_dir = tmp_path / "run"
    cmd = [
        TRAIN,
        "experiment=demo",
        "launcher=slurm",
        "launcher.wait=true",
        "launcher.cpus_per_task=1",
        f"run.dir={run_dir}",
        f"data.root={tiny_shards}",
        "logger=none",
        "trainer.progress=false",
        "trainer.eval_batch_size=16",
        "trainer.max_steps=2",
        "trainer.eval_at_start=false",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    match = re.search(r"submitted Slurm job (\d+)", proc.stdout)
    assert match, proc.stdout[-3000:] + proc.stderr[-3000:]
    job_log_text = (run_dir / f"slurm-{match.group(1)}.out").read_text(errors="replace")
    assert proc.returncode == 0, proc.stderr[-3000:] + job_log_text[-4000:]
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [1, 2]
    assert "cls_object" in proc.stdout  # the closing table, printed after the job ended
    assert job_fields(match.group(1))["JobState"] == "COMPLETED"
