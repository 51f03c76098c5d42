"""Two torchrun agents ("nodes") on this machine, one process each, with the c10d and with the
static rendezvous (`launch/torchrun.sh`, NNODES=2): the run trains with the losses of a
single-node run of the same world size."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .multinode import ARGS, free_port, losses
from .test_cluster_launchers import COMMON, REPO


@pytest.mark.parametrize("backend", ["c10d", "static"])
def test_two_agents_train_like_one_node(
    backend: str, single_node: list[float], tmp_path: Path, tiny_shards: Path
) -> None:
    run_dir = tmp_path / "run"
    endpoint = f"127.0.0.1:{free_port()}"
    procs = []
    for node in range(2):
        env = {
            **os.environ, "GPPF_PYTHON": sys.executable, "NNODES": "2", "NPROC_PER_NODE": "1",
            "NODE_RANK": str(node), "RDZV_ENDPOINT": endpoint, "RDZV_BACKEND": backend,
            "RDZV_ID": f"two-{backend}",
        }  # fmt: skip
        cmd = [str(REPO / "launch" / "torchrun.sh"), "experiment=demo", *COMMON,
               f"run.dir={run_dir}", f"data.root={tiny_shards}", *ARGS]  # fmt: skip
        procs.append(
            subprocess.Popen(
                cmd,
                cwd=tmp_path,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )  # fmt: skip
        )
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-4000:]
    assert "2 node(s) x 1 process(es)" in outs[0]
    assert "workers: 2 on cpu" in outs[0] + outs[1]
    assert losses(run_dir) == single_node
