"""`gppf-bench plan`: what SIMT would do on W ranks, without a cluster.

    gppf-bench plan [--world 8,64,1024] [--batch t=B,...] [--cost t=C,...] [--json]

Plans the reference profile (or the given batches and per-sample costs) with the `cost`
planner for each world size, with 2 W canonical streams per task by default (at most the
task's batch; streams may outnumber shards, see `data/load/streams.py`, and slices then mostly start
and end on stream boundaries) and prints the predicted balance efficiency, idle ranks, planning
time (best of 3), read amplification, and per rank and step the bytes of the gradient
all-reduce and of the expert-parallel all-to-all, with a predicted step time from an
alpha-beta model:

    time of a message of n bytes over a link = alpha + n / beta

* gradient all-reduce: a ring over all W ranks, 2 (W - 1) messages of 1/W of the fp32
  gradients each way; its slowest link is NVLink inside one node (W <= gpus per node), else
  the InfiniBand port of each GPU;
* expert-parallel all-to-all (`--ep-size` > 1, legos not all-reduced): each lego call sends the
  activation to the EP ranks that own the task's selected legos, and back, forward and backward;
  an EP group lives inside one node (NVLink);
* compute: the plan's makespan in cost units times `--unit-ms`, the time of one unit (one
  224 px classification sample forward + backward);
* the step time adds them (no overlap: an upper bound).

Link figures (defaults, per GPU, per direction): NVLink 4 on H100/H200 SXM, 900 GB/s in total
both ways, so 450 GB/s each way, alpha 3 us; InfiniBand NDR (ConnectX-7) at 400 Gb/s = 50 GB/s,
alpha 5 us. `--unit-ms` 0.03: ResNet-50 takes about 4.1 GFLOPs forward at 224 px, so about
12.3 GFLOPs forward + backward, at 40% of an H100's 989 dense bf16 TFLOPS. All are stated
estimates, not measurements; change them with the options.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from typing import Any

from gppf_dist.config.resources import model_yaml
from gppf_dist.simt.divisible import plan_divisible
from gppf_dist.simt.plan import Plan, TaskDemand

# Reference profile: (cost per sample relative to 224 px classification, global batch per step,
# input size) — the input sizes are those the relative costs correspond to.
REFERENCE: dict[str, tuple[float, int, tuple[int, int]]] = {
    "attr": (1.0, 2048, (256, 192)),
    "cls_object": (1.0, 4096, (224, 224)),
    "cls_scene": (1.0, 4096, (224, 224)),
    "det": (12.0, 1024, (800, 800)),
    "face": (0.25, 4096, (112, 112)),
    "pose": (1.3, 2048, (256, 192)),
    "reid": (0.6, 2048, (256, 128)),
    "seg": (5.0, 1024, (512, 512)),
}
COUPLED = {"reid"}
"""Tasks whose loss couples one stream's share (cut at stream boundaries only)."""
WORLDS = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


@dataclass(frozen=True)
class Links:
    gpus_per_node: int = 8
    nvlink_gbs: float = 450.0
    nvlink_alpha_us: float = 3.0
    ib_gbs: float = 50.0
    ib_alpha_us: float = 5.0


@dataclass(frozen=True)
class ModelSizes:
    """What communication volume depends on: parameters, and lego activations per sample."""

    dense_params: int
    lego_params: int
    lego_elems_224: list[int]
    """Per lego layer, elements of one sample's activation at 224 x 224 input (they scale with
    the input area)."""
    top_k: int


def model_sizes(model_name: str) -> ModelSizes:
    """Parameter counts and lego activation sizes of a model config (one 224 px forward)."""

    import torch
    import yaml

    from gppf_dist.config.model import model_config_from_dict
    from gppf_dist.model.build import build_model
    from gppf_dist.parallel.expert import record_lego_shapes
    from gppf_dist.tasks.registry import make_spec

    conf = model_yaml(model_name)
    cfg = model_config_from_dict(yaml.safe_load(conf.read_text()))
    spec = make_spec("cls_object", "classification", (224, 224), {"classes": ["a", "b"]})
    torch.manual_seed(0)
    model = build_model(cfg, {"cls_object": spec})
    owners = model.param_owners()
    named = list(model.named_parameters())
    lego = sum(p.numel() for n, p in named if owners.is_lego(n))
    dense = sum(p.numel() for n, p in named) - lego
    shapes = record_lego_shapes(model, {"cls_object": (224, 224)})["cls_object"]
    elems = [int(torch.Size(s).numel()) for s in shapes if s is not None]
    return ModelSizes(dense, lego, elems, cfg.top_k)


def demands(
    world: int, batch: dict[str, int], cost: dict[str, float], streams: int
) -> list[TaskDemand]:
    out = []
    for task in sorted(batch):
        s = max(1, min(streams, batch[task]))
        while batch[task] % s:
            s -= 1
        g = batch[task] // s if task in COUPLED else 1
        out.append(TaskDemand(task, batch[task], s, 1.0, cost[task], granularity=g))
    return out


def _ring_s(nbytes: float, world: int, links: Links) -> float:
    if world <= 1:
        return 0.0
    intra = world <= links.gpus_per_node
    beta = (links.nvlink_gbs if intra else links.ib_gbs) * 1e9
    alpha = (links.nvlink_alpha_us if intra else links.ib_alpha_us) * 1e-6
    return 2 * (world - 1) * alpha + 2 * (world - 1) / world * nbytes / beta


def simulate(
    world: int,
    mix: list[TaskDemand],
    overhead: float,
    sizes: ModelSizes,
    ep_size: int,
    links: Links,
    unit_ms: float,
    input_sizes: dict[str, tuple[int, int]],
) -> dict[str, Any]:
    seconds = []
    for _ in range(3):  # the best of three: planning is pure, the machine is noisy
        t0 = time.perf_counter()
        plan = plan_divisible(mix, world, overhead)
        seconds.append(time.perf_counter() - t0)
    plan_ms = 1e3 * min(seconds)
    loads = plan.predicted_loads(mix, overhead)
    grad_bytes = 4.0 * (sizes.dense_params + (sizes.lego_params if ep_size == 1 else 0))
    allreduce_bytes = 2 * (world - 1) / world * grad_bytes if world > 1 else 0.0
    a2a_bytes = _alltoall_bytes(plan, sizes, ep_size, input_sizes)
    a2a_s = 0.0
    if ep_size > 1:
        a2a_s = (
            max(a2a_bytes) / (links.nvlink_gbs * 1e9)
            + 4 * len(sizes.lego_elems_224) * (ep_size - 1) * links.nvlink_alpha_us * 1e-6
        )
        grad_ep = 4.0 * sizes.lego_params / ep_size
        a2a_s += _ring_s(grad_ep, world // ep_size, links)  # lego replicas over the EDP group
    compute_ms = max(loads) * unit_ms
    allreduce_ms = 1e3 * _ring_s(grad_bytes, world, links)
    return {
        "world": world,
        "efficiency": plan.balance_efficiency(mix, overhead),
        "idle_ranks": plan.idle_ranks(),
        "plan_ms": plan_ms,
        "read_amplification": plan.read_amplification(mix),
        "allreduce_bytes_per_rank": allreduce_bytes,
        "alltoall_bytes_per_rank": max(a2a_bytes),
        "compute_ms": compute_ms,
        "allreduce_ms": allreduce_ms,
        "alltoall_ms": 1e3 * a2a_s,
        "step_ms": compute_ms + allreduce_ms + 1e3 * a2a_s,
    }


def _alltoall_bytes(
    plan: Plan, sizes: ModelSizes, ep_size: int, input_sizes: dict[str, tuple[int, int]]
) -> list[float]:
    """Per rank, bytes its lego calls send to other EP ranks (activations out and back, forward
    and backward, bf16), with the k selected legos of a layer spread over the EP group."""
    if ep_size <= 1:
        return [0.0] * plan.world_size
    remote = min(sizes.top_k, ep_size) * (ep_size - 1) / ep_size
    per_sample_224 = sum(sizes.lego_elems_224) * 2.0 * remote * 2 * 2
    out = []
    for works in plan.per_rank:
        total = 0.0
        for w in works:
            h, wd = input_sizes.get(w.task, (224, 224))
            total += w.local_batch * per_sample_224 * (h * wd) / (224 * 224)
        out.append(total)
    return out


def _pairs(text: str, cast: type) -> dict[str, Any]:
    out = {}
    for item in filter(None, text.split(",")):
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"`{item}` is not task=value")
        out[name.strip()] = cast(value)
    return out


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="gppf-bench plan", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--world", default=",".join(map(str, WORLDS)), help="rank counts, e.g. 64,1024")
    p.add_argument("--batch", default="", help="task=global batch,... (default: reference)")
    p.add_argument("--cost", default="", help="task=relative cost per sample,...")
    p.add_argument("--streams", type=int, default=0, help="streams per task (default 2 W)")
    p.add_argument("--overhead", type=float, default=0.5, help="per-(rank, task) cost units")
    p.add_argument("--model", default="gppf_r50", help="model config for communication sizes")
    p.add_argument("--ep-size", type=int, default=1)
    p.add_argument("--unit-ms", type=float, default=0.03)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    batch = {t: b for t, (_, b, _) in REFERENCE.items()} | _pairs(args.batch, int)
    cost = {t: c for t, (c, _, _) in REFERENCE.items()} | _pairs(args.cost, float)
    unknown = set(cost) - set(batch)
    if unknown:
        raise SystemExit(f"--cost names tasks without a batch: {sorted(unknown)}")
    inputs = {t: size for t, (_, _, size) in REFERENCE.items()}
    sizes = model_sizes(args.model)
    rows = []
    for world in [int(w) for w in args.world.split(",")]:
        mix = demands(world, batch, cost, args.streams or 2 * world)
        rows.append(simulate(world, mix, args.overhead, sizes, args.ep_size, Links(),
                             args.unit_ms, inputs))  # fmt: skip
    if args.json:
        print(json.dumps(rows[0] if len(rows) == 1 else {"rows": rows}))
        return
    print(f"{args.model}: {sizes.dense_params / 1e6:.1f}M dense + {sizes.lego_params / 1e6:.1f}M "
          f"lego parameters; ep_size {args.ep_size}; overhead {args.overhead} units; "
          f"unit {args.unit_ms} ms")  # fmt: skip
    print(f"{'W':>6} {'eff':>6} {'idle':>5} {'plan ms':>8} {'read amp':>8} "
          f"{'allreduce MB':>12} {'a2a MB':>8} {'compute':>8} {'allreduce':>9} {'a2a':>6} "
          f"{'step ms':>8}")  # fmt: skip
    for r in rows:
        mb = (r["allreduce_bytes_per_rank"] / 1e6, r["alltoall_bytes_per_rank"] / 1e6)
        print(
            f"{r['world']:>6} {r['efficiency']:>6.3f} {r['idle_ranks']:>5} {r['plan_ms']:>8.1f} "
            f"{r['read_amplification']:>8.2f} {mb[0]:>12.1f} {mb[1]:>8.1f} "
            f"{r['compute_ms']:>8.2f} {r['allreduce_ms']:>9.2f} {r['alltoall_ms']:>6.2f} "
            f"{r['step_ms']:>8.2f}"
        )
