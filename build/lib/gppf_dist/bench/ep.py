"""`gppf-bench ep`: one lego layer's forward + backward at E=1 and E=2, and DeepSpeed MoE.

Two gloo processes, each running its own task's batch of tokens through one layer of N MLP legos
(ViT-style, hidden 4·d·r) with its task's top-k route:

* E=1: every rank holds all N legos; after backward the lego gradients are all-reduced (DP).
* E=2: each rank holds N/2 legos; activations go to the legos' owners and back (task-level
  all_to_all dispatch/combine); no lego gradient reduction is needed (one replica per lego).
* peer: `deepspeed.moe.layer.MoE` with the same experts, token top-k routing, ep_size=2.

Blocks alternate so machine noise hits all alike; medians are reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Any

import torch
import torch.distributed as dist

from gppf_dist.bench._procs import join_local_group, time_steps
from gppf_dist.dist.spawn import spawn_ranks

ROUTES = [[0, 3], [1, 2]]  # rank 0's and rank 1's task routes: each spans both EP owners


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gppf-bench ep", description=__doc__)
    p.add_argument("--dim", type=int, default=192)
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--legos", type=int, default=4)
    p.add_argument("--tokens", type=int, default=1024, help="tokens per rank (batch x sequence)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--blocks", type=int, default=4)
    p.add_argument("--json", action="store_true")
    return p.parse_args(argv)


def _lego_layer(args: argparse.Namespace) -> Any:
    from gppf_dist.model.lego import LegoLayer
    from gppf_dist.model.vit import MLPLego

    hidden = int(4 * args.dim * args.ratio)
    torch.manual_seed(0)
    return LegoLayer(args.legos, lambda: MLPLego(args.dim, hidden))


def _ours(args: argparse.Namespace, ep_size: int) -> tuple[Any, int]:
    """A step function for our lego layer at `ep_size`, and this rank's lego parameter bytes."""
    from gppf_dist.dist.mesh import build_expert_groups
    from gppf_dist.model.lego import Route
    from gppf_dist.parallel.expert import EPSession, ExpertLegoLayer, PeerWork
    from gppf_dist.parallel.plan import EPLayout

    rank, world = dist.get_rank(), dist.get_world_size()
    layer = _lego_layer(args)
    gates = torch.tensor([0.6, 0.4])
    x = torch.randn(args.tokens, args.dim, generator=torch.Generator().manual_seed(rank))
    if ep_size == 1:
        params = list(layer.parameters())

        def step() -> None:
            layer(x, ROUTES[rank], gates).sum().backward()
            flat = torch.cat([p.grad.reshape(-1) for p in params if p.grad is not None])
            dist.all_reduce(flat)
            layer.zero_grad(set_to_none=True)

        return step, sum(p.numel() * p.element_size() for p in params)

    layout = EPLayout(world, ep_size, args.legos)
    groups = build_expert_groups(layout, rank)
    routes = {f"task{r}": Route(indices=[ROUTES[r]], gates=gates[None, :]) for r in range(world)}
    session = EPSession(
        layout=layout,
        group=groups.ep,
        ep_rank=layout.ep_rank(rank),
        route_of=routes.__getitem__,
        shapes={t: [(args.dim,)] for t in routes},
        num_layers=1,
    )
    expert = ExpertLegoLayer(layer, 0, session)
    session.layers = [expert]
    peers = [PeerWork(f"task{r}", args.tokens) for r in range(world)]

    def ep_step() -> None:
        session.begin(peers)
        expert(x, ROUTES[rank], gates).sum().backward()
        expert.zero_grad(set_to_none=True)

    return ep_step, sum(p.numel() * p.element_size() for p in expert.parameters())


def _deepspeed_moe(args: argparse.Namespace) -> tuple[Any, int]:
    from gppf_dist.engine.deepspeed import build_moe_layer
    from gppf_dist.model.vit import MLPLego

    hidden = int(4 * args.dim * args.ratio)
    torch.manual_seed(0)
    moe = build_moe_layer(args.dim, MLPLego(args.dim, hidden), args.legos, ep_size=2, k=2)
    x = torch.randn(1, args.tokens, args.dim, generator=torch.Generator().manual_seed(1))

    def step() -> None:
        out, aux, _ = moe(x)
        (out.sum() + aux).backward()
        moe.zero_grad(set_to_none=True)

    experts = [p for n, p in moe.named_parameters() if "experts" in n]
    return step, sum(p.numel() * p.element_size() for p in experts)


def _worker(rank: int, world: int, port: int, args: argparse.Namespace) -> dict[str, Any]:
    """One rank: time every runner in alternating blocks; its step times and lego bytes."""
    join_local_group(rank, world, port, threads=1)
    runners = {"e1": _ours(args, 1), "e2": _ours(args, 2), "deepspeed_moe": _deepspeed_moe(args)}
    times: dict[str, list[float]] = {name: [] for name in runners}
    for fn, _ in runners.values():
        time_steps(fn, 2)  # warm up
    for _ in range(args.blocks):
        for name, (fn, _) in runners.items():
            times[name] += time_steps(fn, args.steps)
    bytes_ = {name: b for name, (_, b) in runners.items()}
    dist.destroy_process_group()
    return {"times": times, "bytes": bytes_}


def main(argv: list[str]) -> None:
    args = _parse(argv)
    data = spawn_ranks(_worker, 2, args)[0]
    med = {name: statistics.median(t) for name, t in data["times"].items()}
    result = {
        "ratio": med["e2"] / med["e1"],
        "e1_step_s": med["e1"],
        "e2_step_s": med["e2"],
        "deepspeed_moe_e2_step_s": med["deepspeed_moe"],
        "lego_bytes_per_rank": {"e1": data["bytes"]["e1"], "e2": data["bytes"]["e2"]},
        "deepspeed_moe_expert_bytes_per_rank": data["bytes"]["deepspeed_moe"],
        "config": {
            "dim": args.dim,
            "ratio": args.ratio,
            "legos": args.legos,
            "k": 2,
            "tokens_per_rank": args.tokens,
            "processes": 2,
        },
    }
    if args.json:
        print(json.dumps(result))
        return
    print(
        f"lego layer fwd+bwd, 2 processes: E=1 {med['e1'] * 1e3:.2f} ms, "
        f"E=2 {med['e2'] * 1e3:.2f} ms (ratio {result['ratio']:.3f}); "
        f"DeepSpeed MoE (token top-2, ep_size=2) {med['deepspeed_moe'] * 1e3:.2f} ms"
    )
    print(
        f"lego bytes per rank: E=1 {data['bytes']['e1']}, E=2 {data['bytes']['e2']}; "
        f"DeepSpeed MoE experts per rank {data['bytes']['deepspeed_moe']}"
    )
