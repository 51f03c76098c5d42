"""Two nodes that share no loopback and whose hostname resolves to neither: two network
namespaces joined by a veth pair (10.77.x.1 and 10.77.x.2), one torchrun agent and one worker
in each (`launch/torchrun.sh` with LOCAL_ADDR and GLOO_SOCKET_IFNAME). The run trains with a
single node's losses. Needs root and `ip netns` (skips otherwise, saying why; `.ci/run` runs as
root)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .multinode import ARGS, free_port, losses
from .test_cluster_launchers import COMMON, REPO

SUBNET = 77


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def namespaces() -> Iterator[list[tuple[str, str, str]]]:
    """[(namespace, interface, address)] for two joined namespaces, removed afterwards."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 (`ip netns`)")
    tag = f"g{os.getpid() % 100000}"
    nodes = [(f"{tag}n{i}", f"{tag}v{i}", f"10.{SUBNET}.{os.getpid() % 200}.{i}") for i in (1, 2)]
    try:
        for ns, _, _ in nodes:
            _ip("netns", "add", ns)
        _ip("link", "add", nodes[0][1], "type", "veth", "peer", "name", nodes[1][1])
        for ns, dev, addr in nodes:
            _ip("link", "set", dev, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
    except subprocess.CalledProcessError as err:
        for ns, _, _ in nodes:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        pytest.skip(f"network namespaces unavailable here: {err.stderr.strip()}")
    yield nodes
    for ns, _, _ in nodes:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_two_nodes_in_separate_network_namespaces(
    namespaces: list[tuple[str, str, str]],
    single_node: list[float],
    tmp_path: Path,
    tiny_shards: Path,
) -> None:
    run_dir = tmp_path / "run"
    endpoint = f"{namespaces[0][2]}:{free_port()}"
    procs = []
    for rank, (ns, dev, addr) in enumerate(namespaces):
        env = {
            **os.environ, "GPPF_PYTHON": sys.executable, "NNODES": "2", "NPROC_PER_NODE": "1",
            "NODE_RANK": str(rank), "RDZV_ENDPOINT": endpoint, "RDZV_ID": "netns",
            "LOCAL_ADDR": addr, "GLOO_SOCKET_IFNAME": dev,
        }  # fmt: skip
        cmd = ["ip", "netns", "exec", ns, str(REPO / "launch" / "torchrun.sh"), "experiment=demo",
               *COMMON, f"run.dir={run_dir}", f"data.root={tiny_shards}", *ARGS]  # fmt: skip
        procs.append(subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))  # fmt: skip
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs, strict=True):
        assert p.returncode == 0, out[-4000:]
    assert losses(run_dir) == single_node
