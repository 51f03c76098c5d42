"""Rank, rendezvous and device set-up of `gppf_dist.dist.env`, without a process group or a GPU:
`init_process_group` and the CUDA device calls are replaced by recorders where a test goes through
`init_distributed` / `pick_device`."""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.distributed as dist

from gppf_dist.dist import env as dist_env
from gppf_dist.dist.hostlist import expand_hostlist, first_slurm_host

LAUNCH_KEYS = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "SLURM_PROCID",
    "SLURM_NTASKS",
    "SLURM_LOCALID",
    "SLURM_JOB_ID",
    "SLURM_JOB_NODELIST",
    "SLURM_NODELIST",
    "SLURM_STEP_NODELIST",
    "CUDA_VISIBLE_DEVICES",
)


@pytest.fixture
def clean_env() -> Iterator[None]:
    """No launcher variables; `rank_info_from_env` and `init_distributed` write into os.environ, so
    the whole environment is put back afterwards."""
    saved = dict(os.environ)
    for key in LAUNCH_KEYS:
        os.environ.pop(key, None)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def recorded_init(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Stands in for `dist.init_process_group`; returns the keyword arguments of each call."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda **kwargs: calls.append(kwargs))
    return calls


# ---- Slurm host lists ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nodelist", "hosts"),
    [
        ("node7", ["node7"]),
        ("gpu[001-004,007],login1", ["gpu001", "gpu002", "gpu003", "gpu004", "gpu007", "login1"]),
        ("a,b.cluster,c-1", ["a", "b.cluster", "c-1"]),
        ("node[08-10]", ["node08", "node09", "node10"]),
        ("node[9-10]", ["node9", "node10"]),
        ("node[3,7-8]-ib", ["node3-ib", "node7-ib", "node8-ib"]),
        ("rack[1-2]-gpu[1-2]", ["rack1-gpu1", "rack1-gpu2", "rack2-gpu1", "rack2-gpu2"]),
    ],
)
def test_expand_hostlist(nodelist: str, hosts: list[str]) -> None:
    assert expand_hostlist(nodelist) == hosts
    assert first_slurm_host(nodelist) == hosts[0]


def test_first_host_of_a_huge_range_is_immediate() -> None:
    assert first_slurm_host("n[000000001-999999999999]") == "n000000001"


@pytest.mark.parametrize(
    "nodelist", ["", "a,,b", "a,", "gpu[1-", "gpu1]", "gpu[[1]]", "gpu[]", "gpu[4-2]", "gpu[a-b]",
                 "gpu[1-8:2]", "gpu 1"]
)  # fmt: skip
def test_unparseable_hostlist_is_a_value_error(nodelist: str) -> None:
    with pytest.raises(ValueError, match="Slurm host list"):
        expand_hostlist(nodelist)


# ---- rendezvous address (finding: every srun node rendezvoused with itself) ---------------------


def test_launcher_address_wins() -> None:
    env = {"MASTER_ADDR": "head", "MASTER_PORT": "29501", "SLURM_JOB_NODELIST": "gpu[1-2]"}
    assert dist_env.rendezvous_address(env, 16) == ("head", 29501)


def test_srun_without_torchrun_derives_the_address_from_slurm() -> None:
    env = {"SLURM_JOB_NODELIST": "gpu[003-004],gpu010", "SLURM_JOB_ID": "123456"}
    assert dist_env.rendezvous_address(env, 8) == ("gpu003", dist_env.slurm_port(123456))


@pytest.mark.parametrize("key", ["SLURM_STEP_NODELIST", "SLURM_NODELIST"])
def test_other_slurm_nodelists(key: str) -> None:
    env = {key: "n[5-6]", "MASTER_PORT": "1234"}
    assert dist_env.rendezvous_address(env, 2) == ("n5", 1234)


def test_step_nodelist_comes_before_the_job_nodelist() -> None:
    # A step on part of the allocation: its rank 0 runs on the step's first node.
    env = {"SLURM_JOB_NODELIST": "n[1-4]", "SLURM_STEP_NODELIST": "n[3-4]", "SLURM_JOB_ID": "7"}
    assert dist_env.rendezvous_address(env, 2)[0] == "n3"


def test_slurm_port_is_deterministic_and_outside_busy_ranges() -> None:
    assert dist_env.slurm_port(123456) == 20000 + 123456 % 9000
    ports = {dist_env.slurm_port(job) for job in range(100_000, 120_000)}
    # Below torch's default 29500 (and the sbatch's torchrun rendezvous ports from there) and
    # below Linux's ephemeral range, which starts at 32768.
    assert min(ports) == 20000 and max(ports) < 29500


def test_world_of_one_needs_no_launcher() -> None:
    addr, port = dist_env.rendezvous_address({}, 1)
    assert addr == "127.0.0.1" and 0 < port < 65536


def test_multi_process_without_address_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"MASTER_ADDR.*WORLD_SIZE=4.*launcher"):
        dist_env.rendezvous_address({"MASTER_PORT": "29500"}, 4)


def test_multi_process_without_port_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"MASTER_PORT.*WORLD_SIZE=2"):
        dist_env.rendezvous_address({"MASTER_ADDR": "head"}, 2)


@pytest.mark.parametrize("port", ["http", "0", "70000"])
def test_bad_master_port_is_a_value_error(port: str) -> None:
    with pytest.raises(ValueError, match=f"MASTER_PORT='{port}'"):
        dist_env.rendezvous_address({"MASTER_ADDR": "head", "MASTER_PORT": port}, 2)


def test_bad_slurm_values_name_their_variable() -> None:
    with pytest.raises(ValueError, match="SLURM_JOB_NODELIST"):
        dist_env.rendezvous_address({"SLURM_JOB_NODELIST": "gpu[1-", "MASTER_PORT": "1"}, 2)
    with pytest.raises(ValueError, match="SLURM_JOB_ID='abc'"):
        dist_env.rendezvous_address({"SLURM_JOB_NODELIST": "gpu1", "SLURM_JOB_ID": "abc"}, 2)


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize("exported_port", [None, "29600"])
def test_init_distributed_under_srun_joins_the_first_node(
    recorded_init: list[dict[str, Any]], exported_port: str | None
) -> None:
    os.environ.update(
        SLURM_PROCID="5",
        SLURM_NTASKS="8",
        SLURM_LOCALID="1",
        SLURM_JOB_ID="4242",
        SLURM_JOB_NODELIST="gpu[007-010]",
    )
    if exported_port is not None:
        os.environ["MASTER_PORT"] = exported_port
    info = dist_env.init_distributed("gloo", torch.device("cpu"), 60)
    assert (info.rank, info.world_size, info.local_rank) == (5, 8, 1)
    assert os.environ["MASTER_ADDR"] == "gpu007"
    assert os.environ["MASTER_PORT"] == (exported_port or str(dist_env.slurm_port(4242)))
    assert len(recorded_init) == 1


@pytest.mark.usefixtures("clean_env")
def test_init_distributed_refuses_to_guess_a_multi_node_address(
    recorded_init: list[dict[str, Any]],
) -> None:
    os.environ.update(RANK="1", WORLD_SIZE="2", LOCAL_RANK="0", MASTER_PORT="29500")
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        dist_env.init_distributed("gloo", torch.device("cpu"), 60)
    assert recorded_init == []


@pytest.mark.usefixtures("clean_env")
def test_init_distributed_without_port_is_a_value_error(
    recorded_init: list[dict[str, Any]],
) -> None:
    os.environ.update(RANK="0", WORLD_SIZE="2", LOCAL_RANK="0", MASTER_ADDR="head")
    with pytest.raises(ValueError, match="MASTER_PORT"):
        dist_env.init_distributed("gloo", torch.device("cpu"), 60)


# ---- CUDA device index (finding: one GPU per task with LOCAL_RANK > 0) --------------------------


@pytest.mark.parametrize(
    ("local_rank", "count", "index"), [(3, 1, 0), (0, 1, 0), (0, 4, 0), (2, 4, 2), (7, 8, 7)]
)
def test_cuda_index(local_rank: int, count: int, index: int) -> None:
    assert dist_env.cuda_index(local_rank, count) == index


@pytest.mark.usefixtures("clean_env")
def test_cuda_index_out_of_range_names_the_variables() -> None:
    os.environ["CUDA_VISIBLE_DEVICES"] = "0,1"
    with pytest.raises(ValueError, match=r"LOCAL_RANK=2.*2 .*CUDA_VISIBLE_DEVICES='0,1'"):
        dist_env.cuda_index(2, 2)


def _fake_cuda(monkeypatch: pytest.MonkeyPatch, count: int) -> list[int]:
    """`count` visible CUDA devices; returns the indices passed to torch.cuda.set_device."""
    chosen: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    return chosen


@pytest.mark.parametrize("preference", ["cuda", "auto"])
def test_pick_device_with_one_gpu_per_task(
    monkeypatch: pytest.MonkeyPatch, preference: str
) -> None:
    # srun --gpus-per-task=1: the task's only visible GPU is cuda:0, whatever LOCAL_RANK says.
    chosen = _fake_cuda(monkeypatch, 1)
    device = dist_env.pick_device(preference, dist_env.RankInfo(3, 4, 3))
    assert device == torch.device("cuda", 0) and chosen == [0]


def test_pick_device_one_process_per_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = _fake_cuda(monkeypatch, 8)
    assert dist_env.pick_device("cuda", dist_env.RankInfo(13, 16, 5)) == torch.device("cuda", 5)
    assert chosen == [5]


def test_pick_device_cuda_without_gpus_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = _fake_cuda(monkeypatch, 0)
    with pytest.raises(ValueError, match="trainer.device='cuda'"):
        dist_env.pick_device("cuda", dist_env.RankInfo(0, 1, 0))
    assert chosen == []
    assert dist_env.pick_device("auto", dist_env.RankInfo(0, 1, 0)) == torch.device("cpu")


def test_pick_device_cpu_ignores_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = _fake_cuda(monkeypatch, 8)
    assert dist_env.pick_device("cpu", dist_env.RankInfo(1, 2, 1)) == torch.device("cpu")
    assert chosen == []


# ---- process-group options (finding: NCCL never bound to the rank's device) ---------------------


def test_process_group_options_bind_nccl_to_the_device() -> None:
    info = dist_env.RankInfo(rank=6, world_size=8, local_rank=2)
    options = dist_env.process_group_options("auto", torch.device("cuda", 2), info, 90)
    assert options == {
        "backend": "nccl",
        "init_method": "env://",
        "rank": 6,
        "world_size": 8,
        "timeout": datetime.timedelta(seconds=90),
        "device_id": torch.device("cuda", 2),
    }


@pytest.mark.parametrize(
    ("backend", "device"), [("auto", "cpu"), ("gloo", "cpu"), ("gloo", "cuda:1")]
)
def test_process_group_options_without_device_id(backend: str, device: str) -> None:
    options = dist_env.process_group_options(
        backend, torch.device(device), dist_env.RankInfo(0, 2, 0), 60
    )
    assert options["backend"] == "gloo" and "device_id" not in options


@pytest.mark.usefixtures("clean_env")
def test_init_distributed_passes_the_device_id(recorded_init: list[dict[str, Any]]) -> None:
    os.environ.update(
        RANK="2", WORLD_SIZE="4", LOCAL_RANK="2", MASTER_ADDR="head", MASTER_PORT="29500"
    )
    dist_env.init_distributed("auto", torch.device("cuda", 2), 60)
    (kwargs,) = recorded_init
    assert kwargs["backend"] == "nccl" and kwargs["device_id"] == torch.device("cuda", 2)


# ---- CUDA math settings (finding: TF32 and cuDNN autotuning never enabled) ----------------------

_B = torch.backends
# allow_tf32 and fp32_precision are two views of one setting: restore the flags first, then the
# precisions, to get back exactly what was there.
_MATH_FLAGS = (
    (_B.cuda.matmul, "allow_tf32"),
    (_B.cudnn, "allow_tf32"),
    (_B.cudnn, "benchmark"),
    (_B, "fp32_precision"),
    (_B.cuda.matmul, "fp32_precision"),
    (_B.cudnn, "fp32_precision"),
    (_B.cudnn.conv, "fp32_precision"),
    (_B.cudnn.rnn, "fp32_precision"),
)


def _math_flags() -> list[object]:
    return [getattr(owner, name) for owner, name in _MATH_FLAGS]


@pytest.fixture
def restore_math_flags() -> Iterator[None]:
    saved = _math_flags()
    try:
        yield
    finally:
        for (owner, name), value in zip(_MATH_FLAGS, saved, strict=True):
            setattr(owner, name, value)
        assert _math_flags() == saved


def _set_math(tf32: bool, benchmark: bool) -> None:
    _B.cuda.matmul.allow_tf32 = tf32
    _B.cudnn.allow_tf32 = tf32
    _B.cudnn.benchmark = benchmark


def _read_math() -> tuple[bool, bool, bool]:
    return _B.cuda.matmul.allow_tf32, _B.cudnn.allow_tf32, _B.cudnn.benchmark


@pytest.mark.usefixtures("restore_math_flags")
@pytest.mark.parametrize(("tf32", "benchmark"), [(True, True), (False, True), (True, False)])
def test_configure_cuda_math_on_cuda(tf32: bool, benchmark: bool) -> None:
    _set_math(not tf32, not benchmark)
    dist_env.configure_cuda_math(torch.device("cuda", 0), tf32=tf32, cudnn_benchmark=benchmark)
    assert _read_math() == (tf32, tf32, benchmark)


@pytest.mark.usefixtures("restore_math_flags")
def test_configure_cuda_math_leaves_cpu_runs_alone() -> None:
    _set_math(False, False)
    dist_env.configure_cuda_math(torch.device("cpu"), tf32=True, cudnn_benchmark=True)
    assert _read_math() == (False, False, False)
