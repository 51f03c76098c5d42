"""CUDA paths checked without a GPU: where a copy may be asynchronous, which device DeepSpeed
binds under `srun --gpus-per-task=1`, DeepSpeed's accelerator against the run's device, and
which products stay out of bf16 autocast.

Each of these passes silently on the CPU and fails only on a GPU node; here the decision is
checked where it is made (the copy's flag, the index handed to DeepSpeed, the accelerator's kind)
with DeepSpeed's own code deciding what it does with it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import deepspeed
import pytest
import torch
import torch.nn.functional as F
from deepspeed.runtime import engine as ds_engine

from gppf_dist.config.schema import RunConfig
from gppf_dist.data.load.workers import WorkerPool
from gppf_dist.dist.env import cuda_index
from gppf_dist.engine.deepspeed import check_accelerator, create_engine
from gppf_dist.tasks.base import move_to
from gppf_dist.tasks.face import ArcFaceHead
from gppf_dist.tasks.reid import retrieval_metrics

REPO = Path(__file__).resolve().parents[2]


def test_copies_to_the_host_block_and_copies_to_a_device_do_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """evaluate.py hands a metric `move_to(outputs, cpu)` and the metric reads it at once: a
    non-blocking device-to-host copy could still be in flight (pinned memory, no error, a
    wrong eval.json). Host-to-device copies stay non-blocking (stream-ordered)."""
    calls: list[tuple[str, bool]] = []
    original = torch.Tensor.to

    def recording_to(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append((torch.device(args[0]).type, bool(kwargs.get("non_blocking"))))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", recording_to)
    outputs = {"cls": torch.zeros(2, 3), "aux": [torch.ones(1), (torch.ones(4),)]}
    move_to(outputs, torch.device("cpu"))
    assert calls == [("cpu", False)] * 3
    calls.clear()
    on_device = move_to(outputs, torch.device("meta"))
    assert calls == [("meta", True)] * 3
    assert on_device["aux"][1][0].device.type == "meta"


class _RecordingCuda:
    """DeepSpeed's CUDA accelerator as far as binding a device goes: records `set_device`."""

    def __init__(self) -> None:
        self.bound: list[int] = []

    def set_device(self, index: int) -> None:
        self.bound.append(index)

    def device_name(self, index: int | None = None) -> str:
        return "cuda" if index is None else f"cuda:{index}"


@pytest.mark.parametrize("local_rank", [0, 3, 7])
def test_deepspeed_binds_the_gpu_this_rank_picked_under_srun_gpus_per_task(
    local_rank: int,
    monkeypatch: pytest.MonkeyPatch,
    compose_run: Callable[..., RunConfig],
) -> None:
    """`srun --gpus-per-task=1`: each task sees one GPU, so its device is cuda:0 whatever its
    LOCAL_RANK. create_engine's arguments go through DeepSpeed's own `_set_distributed_vars`;
    left to itself DeepSpeed would bind cuda:LOCAL_RANK, which does not exist for ranks 1-7."""
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    device = torch.device("cuda", cuda_index(local_rank, device_count=1))
    cuda = _RecordingCuda()
    monkeypatch.setattr(deepspeed, "get_accelerator", lambda: cuda)
    monkeypatch.setattr(ds_engine, "get_accelerator", lambda: cuda)
    monkeypatch.setattr(ds_engine.dist, "get_world_size", lambda *a, **k: 8)
    monkeypatch.setattr(ds_engine.dist, "get_rank", lambda *a, **k: local_rank)
    passed: dict[str, Any] = {}

    def initialize(**kwargs: Any) -> tuple[Any, None, None, None]:
        passed.update(kwargs)
        return object(), None, None, None

    monkeypatch.setattr(deepspeed, "initialize", initialize)
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    create_engine(compose_run("experiment=demo"), model, optimizer, scheduler, 8, device)

    # What DeepSpeed's engine does with those arguments: its own code, in its __init__'s order.
    held = SimpleNamespace()
    ds_engine.DeepSpeedEngine._configure_with_arguments(held, passed.get("args"), None)
    ds_engine.DeepSpeedEngine._set_distributed_vars(held, passed.get("args"))
    assert cuda.bound == [0]
    assert torch.device(held.device) == device


def test_a_cpu_accelerator_with_a_cuda_device_is_refused_naming_ds_accelerator() -> None:
    """A GPU node with DS_ACCELERATOR=cpu in the environment: DeepSpeed's CPU accelerator would
    move the model to the host while trainer.device=auto picked CUDA. The worker refuses."""
    assert os.environ["DS_ACCELERATOR"] == "cpu"  # tests/conftest.py: this machine's setting
    with pytest.raises(ValueError, match=r"DS_ACCELERATOR='cpu'.*trainer.device=cpu"):
        check_accelerator(torch.device("cuda", 0))
    check_accelerator(torch.device("cpu"))


def test_make_leaves_ds_accelerator_to_the_machine() -> None:
    """The Makefile forced DS_ACCELERATOR=cpu into every target, GPU nodes included."""
    env = {k: v for k, v in os.environ.items() if k != "DS_ACCELERATOR"}
    show = 'show-ds-accelerator: ; @echo "[$${DS_ACCELERATOR-unset}]"'
    proc = subprocess.run(
        ["make", "-s", "--eval", show, "show-ds-accelerator"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[unset]"


def test_face_cosines_stay_fp32_under_bf16_autocast() -> None:
    """ArcFace multiplies cos by s=64 and takes acos near +/-1: in bf16 (3 digits) a logit moves
    by ~0.25. The head's matmul ran under the forward's autocast; now it is fp32, and equal to
    the fp32 product of the embedding it returns."""
    torch.manual_seed(0)
    head = ArcFaceHead([8, 16], num_identities=5)
    feats = [torch.randn(3, 8, 4, 4), torch.randn(3, 16, 2, 2)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(feats)
    assert out["cos"].dtype == torch.float32
    expected = F.normalize(out["emb"].float(), dim=1) @ F.normalize(head.centers, dim=1).T
    assert torch.equal(out["cos"], expected)


def test_reid_retrieval_is_the_same_under_bf16_autocast() -> None:
    """The re-ID similarity matrix is float64, which autocast leaves alone: evaluation inside
    an autocast region gives the fp32 region's mAP and rank-1 exactly."""
    torch.manual_seed(0)
    emb = torch.randn(12, 16)
    identity = torch.arange(12) % 4
    camera = torch.arange(12) % 3
    plain = retrieval_metrics(emb, identity, camera)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert retrieval_metrics(emb, identity, camera) == plain


def test_spawned_decode_workers_decode_on_the_ranks_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """data.decoder=gpu spawns decode workers (CUDA cannot be forked); a spawned process starts
    on cuda:0, so every rank of a node decoded on GPU 0. Each worker now binds the device of the
    rank that started it (here cuda:3, mocked: the logic is about indices)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    bound: list[int] = []
    monkeypatch.setattr(torch.cuda, "set_device", bound.append)
    common: dict[str, Any] = dict(
        ctx=None, shards={}, units={}, stream_ids=[0, 1], num_workers=2,
        per_stream_batch=1, shards_per_group=1, starts={},
    )  # fmt: skip
    init = WorkerPool(**common, mp_context="spawn").worker_init()
    assert init is not None
    init(0)
    init(1)
    assert bound == [3, 3]
    assert WorkerPool(**common).worker_init() is None  # forked CPU decoding: nothing to bind
