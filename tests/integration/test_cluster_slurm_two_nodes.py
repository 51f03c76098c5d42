"""`sbatch --nodes=2` on the local two-node Slurm (`launch/slurm/local_cluster.sh`, whose default
is two slurmd daemons on this machine): one torchrun per node with one process each trains with
the losses of a single-node run of world size 2, and a USR1 requeue of the two-node job resumes
with every step once and the same losses.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gppf_dist.logging.metrics import read_metrics

from .test_cluster_slurm import (
    UP_STATES,
    _unavailable,
    job_log,
    preempt_and_requeue,
    slurm,  # noqa: F401  (fixture)
    submit,
    wait_for_job,
)
from .test_train_cli import run_train

MAX_STEPS = 30
ARGS = (
    f"trainer.max_steps={MAX_STEPS}",
    "trainer.eval_at_start=false",
    "trainer.checkpoint_every=1000",
)
TWO_NODES = ("--nodes=2", "--ntasks-per-node=1")


def _losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl")]


def _hostnames(nodelist: str) -> list[str]:
    out = subprocess.run(
        ["scontrol", "show", "hostnames", nodelist],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return out.stdout.split()


@pytest.fixture(scope="module")
def two_nodes(slurm: None) -> list[str]:  # noqa: F811
    out = subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%N %t"], capture_output=True, text=True, timeout=30
    )
    up = sorted(
        {name for name, state in (line.split() for line in out.stdout.splitlines())
         if state.rstrip("*~#") in UP_STATES}
    )  # fmt: skip
    if len(up) < 2:
        _unavailable(
            f"two Slurm nodes needed, up: {up}; start them with `launch/slurm/local_cluster.sh` "
            "(root; NODES=2 is its default)"
        )
    return up


@pytest.fixture(scope="module")
def single_node(tmp_path_factory: pytest.TempPathFactory, tiny_shards: Path) -> list[float]:
    """The same config on one node: `gppf-train launcher.nproc=2` (world size 2)."""
    run_dir = tmp_path_factory.mktemp("one_node") / "run"
    run_train(run_dir, tiny_shards, "launcher.nproc=2", *ARGS)
    losses = _losses(run_dir)
    assert len(losses) == MAX_STEPS
    return losses


def _submit_two_nodes(tmp_path: Path, shards: Path) -> str:
    return submit(tmp_path, shards, *ARGS, sbatch_args=TWO_NODES, env={"NPROC_PER_NODE": "1"})


def _assert_ran_on_both(log: str, nodes: list[str], attempts: int = 1) -> None:
    """Every attempt started one torchrun on each node (the script's per-task line)."""
    for node_id in (0, 1):
        names = [n for n in nodes if f"node {node_id} ({n}): torchrun" in log]
        assert len(names) == 1, (node_id, log[-4000:])
        assert log.count(f"node {node_id} ({names[0]}): torchrun") == attempts, log[-4000:]
    assert log.count("2 node(s) x 1 process(es)") == attempts, log[-4000:]


def test_two_node_job_trains_like_one_node(
    two_nodes: list[str], single_node: list[float], tmp_path: Path, tiny_shards: Path
) -> None:
    job = _submit_two_nodes(tmp_path, tiny_shards)
    fields = wait_for_job(job, timeout=600)
    log = job_log(tmp_path, job)
    assert fields["JobState"] == "COMPLETED", log[-4000:]
    assert sorted(_hostnames(fields["NodeList"])) == two_nodes
    _assert_ran_on_both(log, two_nodes)
    assert "workers: 2 on cpu" in log
    run_dir = tmp_path / "runs" / f"slurm-{job}"
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == list(
        range(1, MAX_STEPS + 1)
    )
    assert _losses(run_dir) == single_node


def test_usr1_requeues_the_two_node_job_and_it_resumes(
    two_nodes: list[str], single_node: list[float], tmp_path: Path, tiny_shards: Path
) -> None:
    job = _submit_two_nodes(tmp_path, tiny_shards)
    # USR1 reaches the batch shell on the first node, which forwards it to the step's torchrun
    # on both nodes, waits for the checkpoint, then requeues the job.
    log = preempt_and_requeue(tmp_path, job, MAX_STEPS)
    _assert_ran_on_both(log, two_nodes, attempts=2)
    assert _losses(tmp_path / "runs" / f"slurm-{job}") == single_node
