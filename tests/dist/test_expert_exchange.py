"""The expert-parallel exchange on real gloo processes (parallel/expert.py, parallel/all_to_all.py).

- A rank's activation goes to every remote owner of its task's legos as the same tensor, sent
  from where it lies: no k-fold send buffer. Seeing that needs 3 EP ranks (at E=2 an activation
  has at most one remote owner). The exchange itself takes uneven and zero sizes, and an input
  sent to several peers gets the sum of their gradients.
- bf16 training: activations and their gradients travel in bf16 (the session's wire dtype),
  dummy exchanges of idle ranks too; `shard_legos` sets it from its arguments.
- `check_splits`: when a rank's expected size disagrees with what its peer sends, both ranks
  raise a RuntimeError naming the lego layer, the ranks and both sizes (instead of a hang or a
  corrupted exchange); on or off, fp32 results are the same.
"""

from __future__ import annotations

from typing import Any

import torch

from .harness import run_distributed

DIM, HIDDEN, TOKENS = 8, 16, 6


class SendLog:
    """Records, per call of torch.distributed's exchange entry points, the tensors handed to the
    send side: {"phase": ..., "sends": [(dtype, data_ptr, numel), ...]}."""

    NAMES = ("all_to_all_single", "all_to_all", "batch_isend_irecv")

    def __init__(self) -> None:
        import torch.distributed as dist

        self.dist, self.phase, self.calls = dist, "forward", []
        self.saved = {name: getattr(dist, name) for name in self.NAMES}
        saved = self.saved

        def single(output: torch.Tensor, input: torch.Tensor, *args: Any, **kw: Any) -> Any:
            self.note([input])
            return saved["all_to_all_single"](output, input, *args, **kw)

        def as_list(outputs: list, inputs: list, *args: Any, **kw: Any) -> Any:
            self.note(list(inputs))
            return saved["all_to_all"](outputs, inputs, *args, **kw)

        def batch(ops: list) -> Any:
            self.note([op.tensor for op in ops if op.op is dist.isend])
            return saved["batch_isend_irecv"](ops)

        for name, fn in zip(self.NAMES, (single, as_list, batch), strict=True):
            setattr(dist, name, fn)

    def note(self, tensors: list[torch.Tensor]) -> None:
        sends = [(t.dtype, t.data_ptr(), t.numel()) for t in tensors]
        self.calls.append({"phase": self.phase, "sends": sends})

    def close(self) -> None:
        for name, fn in self.saved.items():
            setattr(self.dist, name, fn)

    def data_calls(self, phase: str) -> list[list[tuple[torch.dtype, int, int]]]:
        """Sends of the activation/gradient exchanges (not the int64 split checks)."""
        return [
            c["sends"]
            for c in self.calls
            if c["phase"] == phase and all(d.is_floating_point for d, _, _ in c["sends"])
        ]


def _setup(num_legos: int, routes: list[list[int]], num_layers: int, **options: Any) -> Any:
    """EP over the whole world: `num_layers` layers of `num_legos` MLP legos (dense copies kept
    as reference); rank r runs "task{r}" with route `routes[r]` in every layer."""
    import copy

    from gppf_dist.dist.env import init_distributed
    from gppf_dist.dist.mesh import build_expert_groups
    from gppf_dist.model.lego import LegoLayer, Route
    from gppf_dist.model.vit import MLPLego
    from gppf_dist.parallel.expert import EPSession, ExpertLegoLayer
    from gppf_dist.parallel.plan import EPLayout

    info = init_distributed("gloo", torch.device("cpu"), 30)
    world = info.world_size
    torch.manual_seed(0)
    dense = [LegoLayer(num_legos, lambda: MLPLego(DIM, HIDDEN)) for _ in range(num_layers)]
    gates = torch.tensor([[0.7, 0.3]] * num_layers)
    route = {f"task{r}": Route([list(ids)] * num_layers, gates) for r, ids in enumerate(routes)}
    layout = EPLayout(world, world, num_legos)
    groups = build_expert_groups(layout, info.rank)
    session = EPSession(
        layout=layout,
        group=groups.ep,
        ep_rank=info.rank,
        route_of=route.__getitem__,
        shapes={t: [(DIM,)] * num_layers for t in route},
        num_layers=num_layers,
        **options,
    )
    experts = [ExpertLegoLayer(copy.deepcopy(m), i, session) for i, m in enumerate(dense)]
    session.layers = experts
    return info, dense, experts, session, route


def _inputs(rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + rank)
    return torch.randn(TOKENS, DIM, generator=gen), torch.randn(TOKENS, DIM, generator=gen)


def _stack(layers: list, x: torch.Tensor, route: Any) -> torch.Tensor:
    for i, layer in enumerate(layers):
        x = x + layer(x, route.indices[i], route.gates[i])
    return x


def _dense_reference(dense: list, route: dict, world: int, rank: int) -> dict[str, torch.Tensor]:
    """Every task through the dense layers: this rank's output and input gradient, and every
    lego's gradient summed over the tasks (what its EP owner must end up with)."""
    out = {}
    for r in range(world):
        x, w = _inputs(r)
        x.requires_grad_()
        y = _stack(dense, x, route[f"task{r}"])
        (y * w).sum().backward()
        if r == rank:
            out["out"], out["x.grad"] = y.detach(), x.grad
    for i, layer in enumerate(dense):
        for name, p in layer.named_parameters():
            if p.grad is not None:
                out[f"{i}.{name}"] = p.grad.clone()
        layer.zero_grad(set_to_none=True)
    return out


def _ep_step(
    experts: list, session: Any, route: dict, rank: int, world: int
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One micro-step of every rank's task through the EP layers: (output, gradients), x."""
    from gppf_dist.parallel.expert import PeerWork

    session.begin([PeerWork(f"task{r}", TOKENS) for r in range(world)])
    x, w = _inputs(rank)
    x.requires_grad_()
    y = _stack(experts, x, route[f"task{rank}"])
    ((y * w).sum() + session.finish(torch.zeros(()))).backward()
    out = {"out": y.detach(), "x.grad": x.grad}
    for i, layer in enumerate(experts):
        for name, p in layer.named_parameters():
            if p.grad is not None:
                out[f"{i}.{name}"] = p.grad.clone()
        layer.zero_grad(set_to_none=True)
    return out, x


# ---- 1. one activation, two remote owners: sent twice from where it lies ------------------------


def sends_without_copies() -> dict[str, Any]:
    import torch.distributed as dist

    # 3 legos, one per EP rank; each task selects the two legos its rank does not own.
    info, dense, experts, session, route = _setup(3, [[1, 2], [2, 0], [0, 1]], 1)
    reference = _dense_reference(dense, route, info.world_size, info.rank)
    log = SendLog()
    result, x = _ep_step(experts, session, route, info.rank, info.world_size)
    log.close()
    dist.destroy_process_group()
    dispatch = log.data_calls("forward")[0]  # the first exchange of the only lego layer
    return {
        "sends": [(ptr == x.data_ptr(), numel) for _, ptr, numel in dispatch if numel > 0],
        "x_numel": x.numel(),
        "ep": result,
        "dense": reference,
    }


def test_activation_goes_to_each_remote_owner_without_a_copy() -> None:
    for rank, result in enumerate(run_distributed(sends_without_copies, 3)):
        # Two remote owners: two sends of x itself (old code: one send of torch.cat([x, x])).
        assert result["sends"] == [(True, result["x_numel"])] * 2, (rank, result["sends"])
        assert set(result["ep"]) == {"out", "x.grad"} | {
            n for n in result["dense"] if n.startswith(f"0.legos.{rank}.")
        }
        for name, value in result["ep"].items():
            torch.testing.assert_close(value, result["dense"][name], rtol=1e-5, atol=1e-6)


# ---- 2. the exchange primitive, and the copy measured side by side ------------------------------


def _allocated_bytes(fn: Any) -> int:
    """CPU bytes allocated while `fn` runs (torch profiler, every allocation counted)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return sum(max(e.self_cpu_memory_usage, 0) for e in prof.events())


def exchange_primitive() -> dict[str, Any]:
    import torch.distributed as dist

    import gppf_dist.parallel.all_to_all as a2a
    from gppf_dist.dist.env import init_distributed

    info = init_distributed("gloo", torch.device("cpu"), 30)
    rank, world, group = info.rank, info.world_size, dist.group.WORLD
    # Uneven and zero sizes; rank 0 gives one tensor object for two peers.
    sends_to = {0: [1, 2], 1: [2], 2: [0]}
    values = [torch.arange(r + 2.0) + 10 * r for r in range(world)]
    mine = values[rank].clone().requires_grad_()
    nothing = mine.new_empty(0)
    received = a2a.exchange(
        [mine if q in sends_to[rank] else nothing for q in range(world)],
        [values[p].numel() if rank in sends_to[p] else 0 for p in range(world)],
        group,
    )
    sum(((p + 1) * (rank + 1) * r).sum() for p, r in enumerate(received)).backward()
    out: dict[str, Any] = {
        "received": [r.detach() for r in received],
        "grad": mine.grad,
        "expected_grad": sum((q + 1) * (rank + 1) for q in sends_to[rank]) * torch.ones_like(mine),
    }
    # The accelerator path (list all_to_all) takes equal sizes on gloo: same answers. (gloo has
    # the list all_to_all from torch 2.13 on; torch 2.11's says so, and only this check of the
    # NCCL path on gloo cannot run there: `lists` None, which the test allows below 2.13 only.)
    same = torch.full((3,), float(rank))
    with_lists = a2a.uses_list_all_to_all
    a2a.uses_list_all_to_all = lambda device: True
    try:
        out["lists"] = [r.clone() for r in a2a.exchange([same] * world, [3] * world, group)]
    except RuntimeError as err:
        if "gloo does not support alltoall" not in str(err):
            raise
        out["lists"] = None
    finally:
        a2a.uses_list_all_to_all = with_lists
    out["pairs"] = [r.clone() for r in a2a.exchange([same] * world, [3] * world, group)]

    # Side by side: my activation h goes to both other ranks, as before (one k-fold concatenated
    # send buffer, all_to_all_single) and now (the same tensor for both peers).
    n = 1 << 14
    h = torch.randn(n)
    recv = [n if q != rank else 0 for q in range(world)]

    def concatenated() -> None:
        received = torch.empty(sum(recv))
        dist.all_to_all_single(received, torch.cat([h, h]), recv, recv, group=group)

    def as_is() -> None:
        a2a.exchange([h if q != rank else h[:0] for q in range(world)], recv, group)

    concatenated()  # warm-up
    as_is()
    out["bytes"] = {
        "concatenated": _allocated_bytes(concatenated),
        "as_is": _allocated_bytes(as_is),
    }
    out["receive_bytes"] = sum(recv) * 4
    dist.destroy_process_group()
    return out


def test_exchange_uneven_zero_shared_inputs_and_no_send_copy() -> None:
    results = run_distributed(exchange_primitive, 3)
    values = [torch.arange(r + 2.0) + 10 * r for r in range(3)]
    sends_to = {0: [1, 2], 1: [2], 2: [0]}
    for rank, result in enumerate(results):
        for p, got in enumerate(result["received"]):
            want = values[p] if rank in sends_to[p] else torch.empty(0)
            torch.testing.assert_close(got, want)
        torch.testing.assert_close(result["grad"], result["expected_grad"])
        gloo_has_lists = tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 13)
        assert result["lists"] is not None or not gloo_has_lists
        for p in range(3):
            if result["lists"] is not None:
                torch.testing.assert_close(result["lists"][p], torch.full((3,), float(p)))
            torch.testing.assert_close(result["pairs"][p], torch.full((3,), float(p)))
        sent = 2 * (1 << 14) * 4  # h to two peers, fp32
        measured, receive = result["bytes"], result["receive_bytes"]
        print(f"rank {rank}: bytes allocated by one dispatch of a {sent // 2} B activation to 2 "
              f"peers: concatenated {measured['concatenated']}, as is {measured['as_is']} "
              f"(receive buffers {receive})")  # fmt: skip
        assert measured["concatenated"] >= receive + sent  # the measure sees the k-fold copy
        assert measured["as_is"] <= receive  # ... and no send buffer at all now


# ---- 3. bf16 on the wire ----------------------------------------------------------------------


def bf16_wire() -> dict[str, Any]:
    import torch.distributed as dist

    from gppf_dist.parallel.expert import PeerWork

    # 4 legos, 2 per EP rank; each route has one local and one remote lego.
    info, dense, experts, session, route = _setup(4, [[1, 2], [3, 0]], 2, wire_dtype=torch.bfloat16)
    rank, world = info.rank, info.world_size
    reference = _dense_reference(dense, route, world, rank)
    log = SendLog()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        session.begin([PeerWork(f"task{r}", TOKENS) for r in range(world)])
        x, w = _inputs(rank)
        x.requires_grad_()
        y = _stack(experts, x, route[f"task{rank}"])
        loss = (y.float() * w).sum() + session.finish(torch.zeros(()))
    log.phase = "backward"
    loss.backward()
    # A second micro-step with rank 1 idle: its dummy exchanges (run outside autocast, as
    # evaluation does) serve rank 0's bf16 activation.
    log.phase = "idle"
    session.begin([PeerWork("task0", TOKENS), PeerWork(None, 0)])
    if rank == 0:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y0 = _stack(experts, x.detach().requires_grad_(), route["task0"])
            idle_loss = y0.float().sum() + session.finish(torch.zeros(()))
    else:
        idle_loss = session.finish(torch.zeros((), requires_grad=True))
    idle_loss.backward()
    log.close()
    dist.destroy_process_group()
    return {
        "dtypes": {
            phase: sorted({str(d) for call in log.data_calls(phase) for d, _, _ in call})
            for phase in ("forward", "backward", "idle")
        },
        "nonempty": {
            phase: sum(n for call in log.data_calls(phase) for _, _, n in call)
            for phase in ("forward", "backward", "idle")
        },
        "out": y.detach().float(),
        "x.grad": x.grad,
        "dense": reference,
    }


def test_bf16_activations_and_gradients_travel_in_bf16() -> None:
    for rank, result in enumerate(run_distributed(bf16_wire, 2)):
        for phase in ("forward", "backward", "idle"):
            assert result["dtypes"][phase] == ["torch.bfloat16"], (rank, phase, result["dtypes"])
            assert result["nonempty"][phase] > 0, (rank, phase)
        # bf16 compute: close to the fp32 dense reference, not equal.
        torch.testing.assert_close(result["out"], result["dense"]["out"], rtol=0.05, atol=0.05)
        torch.testing.assert_close(
            result["x.grad"], result["dense"]["x.grad"], rtol=0.05, atol=0.05
        )


def shard_legos_bf16() -> dict[str, Any]:
    import torch.distributed as dist

    from gppf_dist.config.model import ModelConfig
    from gppf_dist.dist.env import init_distributed
    from gppf_dist.dist.mesh import build_expert_groups
    from gppf_dist.engine.experts import shard_legos
    from gppf_dist.model.build import build_model
    from gppf_dist.parallel.expert import PeerWork
    from gppf_dist.parallel.plan import EPLayout
    from gppf_dist.tasks.demo import demo_specs, synthetic_batch
    from gppf_dist.tasks.registry import get_task_type

    info = init_distributed("gloo", torch.device("cpu"), 60)
    tasks = ["cls_object", "pose"]
    specs = {t: s for t, s in demo_specs().items() if t in tasks}
    torch.manual_seed(0)
    model = build_model(ModelConfig(), specs)
    layout = EPLayout(2, 2, 4)
    groups = build_expert_groups(layout, info.rank)
    sizes = {t: specs[t].input_size for t in tasks}
    session = shard_legos(
        model, layout, groups, info.rank, sizes, wire_dtype=torch.bfloat16, check_splits=True
    )
    fields = (session.wire_dtype, session.check_splits)
    task = tasks[info.rank]
    images, targets = synthetic_batch(specs[task], 2, torch.Generator().manual_seed(info.rank))
    log = SendLog()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        session.begin([PeerWork(t, 2) for t in tasks])
        out = model(task, images)
        loss = get_task_type(specs[task].type).loss(out, targets, torch.zeros(2, dtype=torch.long))
        loss = loss.sum() + session.finish(torch.zeros(()))
    log.phase = "backward"
    loss.backward()
    log.close()
    dist.destroy_process_group()
    dtypes = {str(d) for p in ("forward", "backward") for c in log.data_calls(p) for d, _, _ in c}
    return {"fields": fields, "dtypes": dtypes, "loss": float(loss), "splits": len(log.calls)}


def test_shard_legos_sets_wire_dtype_and_check_splits() -> None:
    for result in run_distributed(shard_legos_bf16, 2):
        assert result["fields"] == (torch.bfloat16, True)
        assert result["dtypes"] == {"torch.bfloat16"}
        assert torch.isfinite(torch.tensor(result["loss"]))


# ---- 4. check_splits ----------------------------------------------------------------------------


def split_check() -> dict[str, Any]:
    import torch.distributed as dist

    info, dense, experts, session, route = _setup(4, [[1, 2], [3, 0]], 2, check_splits=False)
    rank, world = info.rank, info.world_size
    out: dict[str, Any] = {"dense": _dense_reference(dense, route, world, rank)}
    out["off"] = _ep_step(experts, session, route, rank, world)[0]
    session.check_splits = True
    log = SendLog()
    out["on"] = _ep_step(experts, session, route, rank, world)[0]
    log.close()
    out["checks"] = sum(c["sends"][0][0] == torch.int64 for c in log.calls)
    # Rank 1 now expects a wrong size for rank 0's activation in lego layer 1.
    if rank == 1:
        session.shapes["task0"][1] = (DIM + 1,)
    try:
        _ep_step(experts, session, route, rank, world)
        out["error"] = None
    except RuntimeError as error:
        out["error"] = str(error)
    dist.destroy_process_group()
    return out


def test_check_splits_raises_on_both_ranks_and_leaves_fp32_results_alone() -> None:
    results = run_distributed(split_check, 2)
    for result in results:
        for name, value in result["off"].items():
            torch.testing.assert_close(value, result["dense"][name], rtol=1e-5, atol=1e-6)
            assert torch.equal(value, result["on"][name]), name
        # One check per lego layer: its combine and both backward exchanges use the dispatch's
        # splits, swapped.
        assert result["checks"] == 2
    sent, expected = TOKENS * DIM, TOKENS * (DIM + 1)
    error0, error1 = (r["error"] for r in results)
    assert error1 is not None and error0 is not None, (error0, error1)
    assert "lego layer 1" in error1 and "lego layer 1" in error0
    assert f"EP rank 1 expects {expected} values from EP rank 0, which sends {sent}" in error1
    assert f"EP rank 0 sends {sent} values to EP rank 1, which expects {expected}" in error0
