"""The DeepSpeed launcher across two host names on this machine (`localhost`, `127.0.0.1`),
one process each: over PDSH/ssh to a local sshd (`launch/local_ssh.sh`), and with one
`NO_SSH` launcher call per node as under Slurm. Both train with the losses of a single-node
run of the same world size."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gppf_dist.logging.metrics import read_metrics

from .multinode import ARGS, free_port, losses
from .test_cluster_launchers import COMMON, REPO

HOSTS = "localhost slots=1\n127.0.0.1 slots=1\n"


def _ssh_ready() -> str | None:
    """None when pdsh and ssh reach both host names without a password, else why not."""
    if shutil.which("pdsh") is None:
        return "pdsh is not installed (launch/local_ssh.sh installs it)"
    for host in ("localhost", "127.0.0.1"):
        probe = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=3", host, "true"]
        if subprocess.run(probe, capture_output=True).returncode != 0:
            return f"ssh to {host} fails (run launch/local_ssh.sh as root)"
    return None


def _launch(tmp_path: Path, run_dir: Path, shards: Path, env: dict[str, str]) -> subprocess.Popen:
    cmd = [str(REPO / "launch" / "deepspeed.sh"), "experiment=demo", *COMMON,
           f"run.dir={run_dir}", f"data.root={shards}", *ARGS]  # fmt: skip
    full = {**os.environ, "GPPF_PYTHON": sys.executable, "HOSTFILE": str(tmp_path / "hosts"), **env}
    return subprocess.Popen(cmd, cwd=tmp_path, env=full, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def _finish(procs: list[subprocess.Popen]) -> str:
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-4000:]
    return "".join(outs)


def test_pdsh_over_ssh_to_two_hosts(
    single_node: list[float],
    tmp_path: Path,
    tiny_shards: Path,
) -> None:
    why = _ssh_ready()
    if why is not None:
        if os.environ.get("GPPF_REQUIRE_SSH"):
            pytest.fail(f"GPPF_REQUIRE_SSH is set but {why}")
        pytest.skip(why)
    (tmp_path / "hosts").write_text(HOSTS)
    run_dir = tmp_path / "run"
    out = _finish([_launch(tmp_path, run_dir, tiny_shards, {"MASTER_PORT": str(free_port())})])
    assert "deepspeed.sh: 2 host(s)" in out and "pdsh" in out, out[-3000:]
    assert "localhost:" in out and "127.0.0.1:" in out  # pdsh prefixes each host's lines
    assert losses(run_dir) == single_node


def test_one_launcher_call_per_node(
    single_node: list[float],
    tmp_path: Path,
    tiny_shards: Path,
) -> None:
    (tmp_path / "hosts").write_text(HOSTS)
    run_dir = tmp_path / "run"
    port = str(free_port())
    procs = [
        _launch(
            tmp_path,
            run_dir,
            tiny_shards,
            {"NO_SSH": "1", "NODE_RANK": str(node), "MASTER_PORT": port},
        )  # fmt: skip
        for node in (0, 1)
    ]
    _finish(procs)
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [1, 2, 3]
    assert losses(run_dir) == single_node
