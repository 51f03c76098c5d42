"""Where host and device meet in the step, checked with parameters and batches on `meta`.

`meta` stands in for CUDA: an op mixing a CPU tensor with a meta tensor fails the way it would
with a CUDA tensor, and reading a meta tensor's value (`.item()`, `float()`) fails the way a
host sync would show up. Process-group-free parts only (world size 1); the multi-process step is
in tests/dist/test_step_device.py.
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gppf_dist
from gppf_dist.bench.host_sync import HostSyncCounter
from gppf_dist.data.load.prefetch import DevicePrefetcher
from gppf_dist.engine.reduction import SimtReduction
from gppf_dist.engine.step import StepContext, TaskRuntime, _local_stats
from gppf_dist.engine.timing import DeviceTimer
from gppf_dist.model.owners import OwnerMap
from gppf_dist.simt.objective import TaskWeights
from gppf_dist.simt.reduce import clip_gradients, reduce_gradients
from gppf_dist.tasks.base import Batch

META = torch.device("meta")


def _ctx(device: torch.device, num_tasks: int = 3, world: int = 2) -> StepContext:
    tasks = {
        f"t{i}": TaskRuntime(i, None, TaskWeights(1.0, 4))  # type: ignore[arg-type]
        for i in range(num_tasks)
    }
    ctx = StepContext(
        engine=None,  # type: ignore[arg-type]
        tasks=tasks,
        world_size=world,
        rank=1,
        device=device,
        reduction=SimtReduction(OwnerMap({}), lambda t: set(), world, 1.0),
        loaders={},
    )
    ctx.timer = DeviceTimer(device)
    return ctx


def test_step_statistics_are_built_on_the_compute_device() -> None:
    ctx = _ctx(META)
    loss_sums = torch.zeros(3, dtype=torch.float64, device=META)
    stats = _local_stats(ctx, loss_sums, (2, 1))
    assert stats.device == META
    assert stats.shape == (3 + 3 + 3 + 3 + 2 + 3,)  # losses, skipped, dropped, seconds, busy, flags


def test_statistics_ride_in_the_gradient_bucket_on_the_device() -> None:
    layer = nn.Linear(4, 3, device=META)
    for p in layer.parameters():
        p.grad = torch.empty_like(p)
    named = list(layer.named_parameters())
    extra = _local_stats(_ctx(META), torch.zeros(3, dtype=torch.float64, device=META), (0, 0))
    summed = reduce_gradients(named, {n for n, _ in named}, 1, extra=extra)
    assert summed is not None and summed.device == META
    assert all(p.grad.device == META for p in layer.parameters())


def test_clipping_keeps_the_norm_on_the_device() -> None:
    # Reading the norm on the host (float(norm)) would fail here: a meta tensor has no value.
    layer = nn.Linear(4, 3, device=META)
    for p in layer.parameters():
        p.grad = torch.empty_like(p)
    norm = clip_gradients(list(layer.parameters()), 1.0)
    assert isinstance(norm, torch.Tensor) and norm.device == META


def test_clipping_matches_the_host_formula() -> None:
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(5, 3)) for _ in range(3)]
    for p in params:
        p.grad = torch.randn_like(p) * 4
    grads = [p.grad.clone() for p in params]
    norm = clip_gradients(params, 1.0)
    expected = torch.stack([g.double().pow(2).sum() for g in grads]).sum().sqrt()
    torch.testing.assert_close(norm, expected)
    factor = min(1.0, 1.0 / (float(expected) + 1e-6))
    for p, g in zip(params, grads, strict=True):
        assert torch.equal(p.grad, g * factor)


def test_router_routes_without_host_sync_and_on_the_device() -> None:
    from gppf_dist.config.model import RouterConfig
    from gppf_dist.model.router import TaskRouter

    router = TaskRouter(["a", "b"], 4, 4, 2, RouterConfig(gumbel_warmup_steps=10))
    router.set_step(3)  # the step's host copy of the selection is taken here, once
    expected = {t: router.route(t).indices for t in ("a", "b")}
    with HostSyncCounter() as counter:
        routes = {t: router.route(t) for t in ("a", "b")}
    assert counter.records == [], counter.by_site()
    assert {t: r.indices for t, r in routes.items()} == expected
    # The same selection the per-forward host read made: top-k of the noisy scores.
    scale, tau = router._noise_schedule()
    for t, name in enumerate(("a", "b")):
        scores = (router.logits[name] + scale * router.gumbel_noise(t, 3)) / tau
        assert routes[name].indices == scores.topk(2, dim=-1).indices.tolist()
    # On the stand-in device, gates are computed there from the device copy of the selection.
    router.to(META)  # a meta router has no values to read: give it the host copy from above
    router._selection = _host_selection_on(router, META, expected)
    assert router.route("a").gates.device == META


def _host_selection_on(router: Any, device: torch.device, indices: dict[str, Any]) -> Any:
    from gppf_dist.model.router import _Selection

    index = torch.tensor([indices[n] for n in router.task_names]).to(device)
    noise = torch.zeros(len(router.task_names), 4, 4, device=device)
    lists = [indices[n] for n in router.task_names]
    return _Selection(router._selection_key(), lists, index, noise)


def test_router_selection_is_retaken_when_logits_change() -> None:
    from gppf_dist.config.model import RouterConfig
    from gppf_dist.model.router import TaskRouter

    router = TaskRouter(["a"], 2, 4, 1, RouterConfig(gumbel_warmup_steps=0))
    router.set_step(0)
    with torch.no_grad():
        router.logits["a"].zero_()
        router.logits["a"][:, 3] = 5.0
    assert router.route("a").indices == [[3], [3]]


class _CountingLoader:
    """A loader with positions and skip counts, like TaskLoader."""

    def __init__(self) -> None:
        self.step = 0

    def __next__(self) -> Batch:
        self.step += 1
        images = torch.full((2, 3, 4, 4), self.step, dtype=torch.uint8)
        return Batch(task="t", images=images, targets={"y": torch.zeros(2)},
                     groups=torch.zeros(2, dtype=torch.long), keys=[])  # fmt: skip

    def positions(self) -> dict[int, int]:
        return {0: self.step}

    @property
    def skipped(self) -> dict[str, int]:
        return {"bad": self.step}


def test_prefetcher_delivers_on_the_device_one_step_ahead() -> None:
    loader = _CountingLoader()
    prefetcher = DevicePrefetcher(loader, META, channels_last=True)
    assert prefetcher.positions() == {0: 0}
    batch = next(prefetcher)
    assert batch.images.device == META and batch.targets["y"].device == META
    assert batch.groups.device == META
    assert batch.images.is_contiguous(memory_format=torch.channels_last)
    prefetcher.wait_prefetched()
    assert loader.step == 2  # the next batch is already read (and its copy issued)
    assert prefetcher.positions() == {0: 1}  # but a checkpoint resumes after the consumed one
    assert prefetcher.skipped == {"bad": 1}


class _GatedLoader(_CountingLoader):
    """Reading batch 2 and later waits for `gate`: a slow shard read, a busy decode worker."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def __next__(self) -> Batch:
        if self.step >= 1 and not self.gate.wait(timeout=30):
            raise TimeoutError("the gate was never opened")
        if self.step >= 3:
            raise StopIteration
        return super().__next__()


def test_the_step_gets_its_batch_before_the_next_one_is_read() -> None:
    """The next batch is read off the step's path: `next()` hands out batch 1 while reading
    batch 2 is still blocked (it used to read, pin and copy batch 2 before handing out batch 1,
    so the device idled for a whole loader read every step)."""
    loader = _GatedLoader()
    prefetcher = DevicePrefetcher(loader, torch.device("cpu"), ahead=True)
    started = time.monotonic()
    first = next(prefetcher)
    assert time.monotonic() - started < 10  # not held by the gated read of batch 2
    assert int(first.images[0, 0, 0, 0]) == 1 and prefetcher.positions() == {0: 1}
    loader.gate.set()
    assert [int(next(prefetcher).images[0, 0, 0, 0]) for _ in range(2)] == [2, 3]
    with pytest.raises(StopIteration):
        next(prefetcher)
    assert prefetcher.positions() == {0: 3}
    prefetcher.close()


def test_a_loader_error_reaches_the_step_at_its_next_batch() -> None:
    class _Broken(_CountingLoader):
        def __next__(self) -> Batch:
            if self.step == 1:
                raise RuntimeError("shard 7 unreadable")
            return super().__next__()

    prefetcher = DevicePrefetcher(_Broken(), META)  # meta stands in for CUDA: reads ahead
    next(prefetcher)
    with pytest.raises(RuntimeError, match="shard 7 unreadable"):
        next(prefetcher)


def test_every_loader_read_is_on_one_thread_in_the_order_asked() -> None:
    """Loaders share in-process state (the decode path, its readers), so two
    must never read at once: all reads of all prefetchers run on the one fetch thread, never
    the step's, in the order the step asked for them (a thread per prefetcher raced)."""
    reads: list[tuple[str, int, int]] = []

    class _Recording(_CountingLoader):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

        def __next__(self) -> Batch:
            batch = super().__next__()
            reads.append((self.name, self.step, threading.get_ident()))
            return batch

    a = DevicePrefetcher(_Recording("a"), torch.device("cpu"), ahead=True)
    b = DevicePrefetcher(_Recording("b"), torch.device("cpu"), ahead=True)
    for _ in range(3):
        next(a)
        next(b)
    a.wait_prefetched()
    b.wait_prefetched()
    order = [(name, step) for name, step, _ in reads]
    assert order == [("a", 1), ("a", 2), ("b", 1), ("b", 2), ("a", 3), ("b", 3), ("a", 4),
                     ("b", 4)]  # fmt: skip
    threads = {thread for _, _, thread in reads}
    assert len(threads) == 1 and threading.get_ident() not in threads


@pytest.mark.parametrize("ahead", [False, True])
def test_prefetcher_positions_resume_exactly(tiny_shards: Path, ahead: bool) -> None:
    from gppf_dist.data.format.manifest import load_manifest
    from gppf_dist.data.load.loader import TaskLoader
    from tests.fake_task import ResizeTaskType, fake_spec

    manifest = load_manifest(tiny_shards)

    def loader(start: Any = None) -> TaskLoader:
        return TaskLoader(
            root=tiny_shards, manifest=manifest, task="cls_object", spec=fake_spec("cls_object"),
            task_type=ResizeTaskType(), num_streams=2, stream_ids=[0, 1],
            per_stream_batch=3, seed=0, start_positions=start,
        )  # fmt: skip

    prefetched = DevicePrefetcher(loader(), torch.device("cpu"), ahead=ahead)
    first = [next(prefetched) for _ in range(3)]
    resumed = DevicePrefetcher(loader(prefetched.positions()), torch.device("cpu"), ahead=ahead)
    plain = loader()
    expected = list(itertools.islice(plain, 5))
    for got, want in zip(first + [next(resumed), next(resumed)], expected, strict=True):
        assert got.keys == want.keys and torch.equal(got.images, want.images)


_X = torch.randn(5)
_I = torch.tensor([1, 0, 2])
_SYNCS: dict[str, tuple[Any, list[str]]] = {  # pattern: (call, what the counter records)
    "item": (lambda: _X.sum().item(), ["item"]),
    "tolist": (lambda: _X.tolist(), ["tolist"]),
    "float": (lambda: float(_X[0]), ["__float__"]),
    "bool": (lambda: bool(_X[0] > 0), ["__bool__"]),
    "mask index": (lambda: _X[_X > 0], ["__getitem__[bool mask]"]),
    "mask assign": (lambda: _X.clone().__setitem__(_X > 0, 0.0), ["__setitem__[bool mask]"]),
    "masked_select": (lambda: _X.masked_select(_X > 0), ["masked_select"]),
    "nonzero": (lambda: _X.nonzero(), ["nonzero"]),
    "where(cond)": (lambda: torch.where(_X > 0), ["where(cond)"]),
    "unique": (lambda: _I.unique(), ["unique"]),
    "bincount": (lambda: torch.bincount(_I), ["bincount"]),
    "repeat_interleave": (
        lambda: _X[:3].repeat_interleave(_I),
        ["repeat_interleave(tensor repeats)"],
    ),
    "cpu": (lambda: _X.cpu(), ["cpu"]),
    "tensor onto a device": (lambda: torch.tensor([1.0], device="cpu"), ["tensor(device=cpu)"]),
    "as_tensor onto a device": (
        lambda: torch.as_tensor([1.0], device=META),
        ["as_tensor(device=meta)"],
    ),
    # caught beneath the Python level: aten ops inside a call that is not itself a sync
    "blocking copy": (lambda: _X.to(META), ["_to_copy(cpu -> meta) in to"]),
    "blocking copy_": (
        lambda: torch.empty(5, device=META).copy_(_X),
        ["copy_(cpu -> meta) in copy_"],
    ),
    "index_put_ with a mask": (
        lambda: torch.index_put_(_X.clone(), (_X > 0,), torch.zeros(())),
        ["index_put_[bool mask] in index_put_"],
    ),
    "one_hot": (lambda: F.one_hot(_I, 3), ["_local_scalar_dense in one_hot"] * 2),
}


@pytest.mark.parametrize("pattern", list(_SYNCS))
def test_host_sync_counter_sees_syncs_and_names_the_site(pattern: str) -> None:
    call, ops = _SYNCS[pattern]
    with HostSyncCounter() as counter:
        call()
    assert [r.op for r in counter.records] == ops  # the Python level hides its aten ops
    assert all(r.site == "outside gppf_dist" and r.phase == "step" for r in counter.records)


def test_host_sync_counter_passes_dense_arithmetic_and_host_construction() -> None:
    x = _X
    with HostSyncCounter() as counter:
        mean = torch.where(x > 0, x, 0.0).sum() / (x > 0).sum().clamp(min=1)
        onehot = torch.arange(3, device=x.device)[None] == _I[:, None]
        _ = x.clone()[:, None].fill_(2.0) * mean + onehot.sum()
        _ = x.repeat_interleave(2)[:5] + x.repeat_interleave(_I.new_ones(5), output_size=5)
        host = torch.tensor([1.0, 2.0], dtype=torch.float64)  # made on the host: no sync
        _ = host.to(META, non_blocking=True)  # asynchronous upload
        y = x.clone()
        y[0] = 1.0
        y[_I] = 0.0
    assert counter.records == [], counter.by_site()


def test_host_sync_counter_names_our_site_and_spares_the_data_layer() -> None:
    package = Path(gppf_dist.__file__).resolve().parent
    code = "x.sum().item()\ntorch.nn.functional.one_hot(i, 3)\n"
    with HostSyncCounter() as counter:
        for layer in ("engine", "data"):
            file = str((package / layer / "made_up.py").resolve())
            exec(compile(code, file, "exec"), {"x": _X, "i": _I, "torch": torch})
    assert counter.by_site() == {
        "item at engine/made_up.py:1 in <module>": 1,
        "_local_scalar_dense in one_hot at engine/made_up.py:2 in <module>": 2,
    }


def test_host_sync_counter_sees_backward() -> None:
    class ReadBack(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
            return x * 1

        @staticmethod
        def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
            return grad * len(grad.nonzero())  # Python-level calls in backward run unseen

    x = torch.randn(3, requires_grad=True)
    loss = ReadBack.apply(x).sum()
    with HostSyncCounter() as counter:
        loss.backward()
    assert [r.op for r in counter.records] == ["nonzero in backward"]  # seen by the aten level


@pytest.mark.parametrize("device", ["cpu"])
def test_timer_reports_after_collect(device: str) -> None:
    timer = DeviceTimer(torch.device(device))
    start = timer.mark()
    timer.add(0, start, timer.mark())
    timer.add(1, start, timer.mark())
    assert timer.last is None
    seconds = timer.collect_step(3)
    assert seconds[0] >= 0 and seconds[1] >= 0 and seconds[2] == 0 and timer.last == seconds
    assert timer.collect_step(3) == [0.0, 0.0, 0.0]
