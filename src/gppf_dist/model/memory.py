"""Training memory of a GPPF model, predicted without a GPU.

Two parts make a rank's peak:

* **state**, held for the whole run: fp32 parameters, fp32 gradients (accumulated over the
  rank's tasks until the optimizer step) and AdamW's two moments; ZeRO 1 partitions the
  moments, ZeRO 2 the gradients too, each over the world, with DeepSpeed's fp32 partition copy
  and its reduce bucket; expert parallelism holds 1/E of the lego parameters. Counted from the
  parameter shapes (`state_memory`).
* **activations** of one forward and backward of one task's micro-batch: the tasks of a rank
  run in turn, so the largest one counts. Measured by running that forward and backward on fake
  tensors (`torch._subclasses.FakeTensorMode`: shapes and dtypes, no memory, no arithmetic)
  while `LiveBytes` adds up the bytes of every storage alive at each point
  (`FakeModel.activation_memory`). The training precision's autocast (bf16) and activation
  checkpointing are applied as in training. Activations grow linearly with the batch, so two
  batch sizes give a line, `ActivationMemory.at(b)`.

What is not modelled: the task's loss (run on the head's outputs; small next to the backbone's
activations) and the allocator's fragmentation, the CUDA context and communication buffers,
which the caller's margin covers (`simt/memory_caps.py`).
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import torch
from torch.utils import _pytree
from torch.utils._python_dispatch import TorchDispatchMode

from gppf_dist.config.model import ModelConfig
from gppf_dist.model.build import build_model
from gppf_dist.model.lego import Route, set_activation_checkpointing
from gppf_dist.model.meta_count import META, twin_forward
from gppf_dist.model.summary import gmacs_of
from gppf_dist.tasks.base import TaskSpec

GIB = 2**30
FP32 = 4
ADAM_MOMENTS = 2
ZERO_REDUCE_BUCKET = 500_000_000
"""DeepSpeed's default `reduce_bucket_size` (elements): one fp32 bucket under ZeRO 1 and 2."""
SLOPE_BATCH = 4
"""The second batch size the activation line is measured at (the first is 1)."""


@dataclass(frozen=True)
class ActivationMemory:
    """Peak bytes above the state during one task's forward and backward: `fixed + per_sample·b`."""

    task: str
    fixed: int
    per_sample: int

    def at(self, batch: int) -> int:
        return 0 if batch <= 0 else self.fixed + self.per_sample * batch

    def largest_batch(self, budget: int) -> int:
        """The largest micro-batch whose activations fit in `budget` bytes (0: not even one)."""
        if self.at(1) > budget:
            return 0
        return max(1, (budget - self.fixed) // max(self.per_sample, 1))


@dataclass(frozen=True)
class StateMemory:
    """Bytes a rank holds for the whole run."""

    params: int
    grads: int
    optimizer: int

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer


def parameter_counts(cfg: ModelConfig, specs: dict[str, TaskSpec]) -> tuple[int, int]:
    """(lego parameters, all other parameters) of the model for `specs`, counted on meta."""
    with torch.device(META):
        model = build_model(cfg, specs)
    owners = model.param_owners()
    lego = other = 0
    for name, p in model.named_parameters():
        if owners[name].is_lego:
            lego += p.numel()
        else:
            other += p.numel()
    return lego, other


def state_memory(
    lego_params: int, other_params: int, world: int, ep_size: int = 1, zero_stage: int = 0
) -> StateMemory:
    """fp32 parameters, gradients and AdamW moments of one rank (see the module doc)."""
    held = other_params + math.ceil(lego_params / ep_size)
    params = FP32 * held
    if zero_stage == 0:
        return StateMemory(params, FP32 * held, ADAM_MOMENTS * FP32 * held)
    share = math.ceil(held / world)
    bucket = FP32 * min(ZERO_REDUCE_BUCKET, held)
    grads = (FP32 * share if zero_stage >= 2 else FP32 * held) + bucket
    optimizer = (ADAM_MOMENTS + 1) * FP32 * share  # moments and the fp32 partition copy
    return StateMemory(params, grads, optimizer)


def float_tensors(out: object) -> list[torch.Tensor]:
    leaves = _pytree.tree_leaves(out)
    return [t for t in leaves if isinstance(t, torch.Tensor) and t.is_floating_point()]


class LiveBytes(TorchDispatchMode):
    """Counts the bytes of every storage an op creates while it is alive, and the peak.

    Storages that exist on entry are not counted, except `held` ones (e.g. gradients, which
    backward may replace): those count from the start and `peak_above_start` leaves them out.
    """

    def __init__(self, held: list[torch.Tensor]) -> None:
        super().__init__()
        self.live = self.peak = self.start = 0
        self._seen: weakref.WeakSet[torch.UntypedStorage] = weakref.WeakSet()
        for t in held:
            self._track(t.untyped_storage())
        self.start = self.peak = self.live

    def _track(self, storage: torch.UntypedStorage) -> None:
        if storage in self._seen:
            return
        self._seen.add(storage)
        size = storage.nbytes()
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._free, size)

    def _free(self, size: int) -> None:
        self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in _pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self._track(t.untyped_storage())
        return out

    @property
    def peak_above_start(self) -> int:
        return self.peak - self.start


class FakeModel:
    """The model for one task set built once on fake tensors, to measure activation peaks."""

    def __init__(self, cfg: ModelConfig, specs: dict[str, TaskSpec], checkpointing: bool) -> None:
        from torch._subclasses.fake_tensor import FakeTensorMode

        self.cfg = cfg
        self.specs = specs
        self.mode = FakeTensorMode()
        with self.mode:
            self.model = build_model(cfg, specs).train()
            set_activation_checkpointing(self.model, checkpointing)
            for p in self.model.parameters():  # as on a rank after its first task
                p.grad = torch.zeros_like(p)

    def peak(self, task: str, batch: int, precision: str) -> int:
        """Bytes alive at the peak of one forward + backward of `task` at `batch`, above the
        parameters and gradients."""
        dtype = {"fp32": None, "bf16": torch.bfloat16}[precision]
        h, w = self.specs[task].input_size
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        with self.mode, LiveBytes(grads) as live:
            images = torch.zeros(batch, 3, h, w, dtype=torch.uint8)
            route = self._route(task)
            with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                out = twin_forward(self.model, task, images, route)
                total = sum(t.float().sum() for t in float_tensors(out))
            assert isinstance(total, torch.Tensor), f"task {task!r}: no float output"
            total.backward()
            del out, total, route
        return live.peak_above_start

    def _route(self, task: str) -> Route:
        """A fixed route (call inside `self.mode`): which legos a task selects does not change
        their sizes or FLOPs (and the router's own selection reads values, which fake tensors
        do not have)."""
        logits = self.model.router.logits[task]
        top_k = self.cfg.top_k
        return Route(
            indices=[list(range(top_k))] * logits.shape[0],
            gates=torch.softmax(logits[:, :top_k], dim=-1),
        )

    def training_gflop(self, task: str) -> float:
        """FLOPs (x1e-9) of training on one sample of `task`: 3x its forward (the backward
        computes the gradients of both activations and weights), counted on fake tensors by
        torch's FLOP counter, without activation checkpointing's recomputation."""
        h, w = self.specs[task].input_size
        with self.mode, torch.no_grad():
            images = torch.zeros(1, 3, h, w, dtype=torch.uint8)
            route = self._route(task)  # without autograd, like everything the counter sees
            gmacs = gmacs_of(lambda: twin_forward(self.model, task, images, route))
        return 3 * 2 * gmacs

    def activation_memory(self, task: str, precision: str = "fp32") -> ActivationMemory:
        """The line through the peaks at batch 1 and `SLOPE_BATCH` (see the module doc)."""
        one = self.peak(task, 1, precision)
        many = self.peak(task, SLOPE_BATCH, precision)
        per_sample = max((many - one) // (SLOPE_BATCH - 1), 1)
        return ActivationMemory(task, max(one - per_sample, 0), per_sample)


def activation_memory(
    cfg: ModelConfig, spec: TaskSpec, precision: str = "fp32", checkpointing: bool = False
) -> ActivationMemory:
    """One task's activation line, on a model built for it alone."""
    return FakeModel(cfg, {spec.name: spec}, checkpointing).activation_memory(spec.name, precision)


def training_gflop(cfg: ModelConfig, specs: dict[str, TaskSpec]) -> dict[str, float]:
    """Per task, FLOPs (x1e-9) of training on one sample (`FakeModel.training_gflop`): the
    numerator of a run's MFU. No real tensor is made and no random number drawn."""
    with torch.random.fork_rng(devices=[]):
        fake = FakeModel(cfg, specs, checkpointing=False)
        return {task: fake.training_gflop(task) for task in specs}
