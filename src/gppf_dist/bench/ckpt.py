"""`gppf-bench ckpt`: what a checkpoint costs a run, on real DeepSpeed engines and gloo ranks.

    gppf-bench ckpt --params 100000000 --world 2 --zero 0 --json

`--world` processes build a DeepSpeed engine around a stack of linear layers of `--params`
parameters in all (fp32, AdamW after one step, so the optimizer state exists), at ZeRO
`--zero`. Then, timed between barriers: a synchronous `Checkpointer.save` of the whole state
(the engine's files and the marker); a background save of the same state (the next step's
checkpoints, twice: `save(background=True)`, then `wait`); and a restart's checkpoint selection
(`checkpoint.resume.select_resume`: which checkpoint, checksummed once in shares) followed by
the load. Reported, summed over the ranks where they are bytes:

- `sync_blocking_s`: the synchronous save, from the step boundary until training goes on;
- `async_blocking_s`: the background save's part at the step boundary (the copy to host
  memory and DeepSpeed's collectives), for a save after the first (the first allocates the
  host buffers the next ones reuse: `async_first_blocking_s`); `async_total_s`: until it is
  published;
- `bytes_written` and `bytes_hashed_at_save` of the synchronous save; `bytes_resumed`, the size
  of the checkpoint the restart loads (the last background one), and `bytes_hashed_at_resume`;
- `resume_select_s`, `resume_load_s`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from gppf_dist.bench._procs import join_local_group
from gppf_dist.dist.spawn import spawn_ranks

WIDTH = 2048
"""Each layer is WIDTH x WIDTH (+ bias): 4.2M parameters; the last takes the remainder."""


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gppf-bench ckpt", description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=int, default=100_000_000, help="parameters in all")
    parser.add_argument("--world", type=int, default=2, help="processes (gloo ranks)")
    parser.add_argument("--zero", type=int, default=0, choices=(0, 1, 2), help="ZeRO stage")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a tmp)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.params < WIDTH + 1 or args.world < 1:
        parser.error(f"--params must be > {WIDTH} and --world >= 1")
    return args


def _model(params: int) -> nn.Module:
    per_layer = WIDTH * WIDTH + WIDTH
    layers: list[nn.Module] = [nn.Linear(WIDTH, WIDTH) for _ in range(params // per_layer)]
    rest = params - len(layers) * per_layer
    if rest > WIDTH:  # one narrower layer for the remainder: (WIDTH + 1) * out parameters
        layers.append(nn.Linear(WIDTH, max(1, rest // (WIDTH + 1))))
    return nn.Sequential(*layers)


def _rank(rank: int, world: int, port: int, args: argparse.Namespace, run: str) -> dict:
    from gppf_dist.checkpoint.client_state import ClientState
    from gppf_dist.checkpoint.digest import bytes_hashed
    from gppf_dist.checkpoint.marker import Topology, read_marker
    from gppf_dist.checkpoint.resume import select_resume
    from gppf_dist.checkpoint.saving import recording_writes
    from gppf_dist.checkpoint.store import Checkpointer
    from gppf_dist.config.schema import RunConfig
    from gppf_dist.dist.mesh import build_checkpoint_group
    from gppf_dist.engine.deepspeed import create_engine, destroy_groups

    device = join_local_group(rank, world, port)
    torch.manual_seed(0)
    model = _model(args.params)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    cfg = RunConfig()
    cfg.parallel.zero_stage = args.zero
    engine = create_engine(cfg, model, optimizer, scheduler, world, device)
    engine.backward(engine.module(torch.randn(1, WIDTH)).sum())
    engine.step()  # AdamW's moments exist now
    topology = Topology(world, 1, args.zero)
    group = build_checkpoint_group(600)
    ckpt = Checkpointer(engine, Path(run), topology, 2, rank == 0, group=group)
    state = ClientState(1, {}, None, world)

    def timed(fn: Any) -> tuple[Any, float]:
        dist.barrier()
        start = time.perf_counter()
        out = fn()
        dist.barrier()
        return out, time.perf_counter() - start

    hashed = bytes_hashed()
    with recording_writes() as written:
        _, save_s = timed(lambda: ckpt.save(state))
    hashed_save = bytes_hashed() - hashed
    # the first background save allocates its host buffers; the next ones copy into them
    _, first_async_s = timed(lambda: ckpt.save(ClientState(2, {}, None, world), background=True))
    _, wait_s = timed(ckpt.wait)
    _, async_s = timed(lambda: ckpt.save(ClientState(3, {}, None, world), background=True))
    _, wait_s = timed(ckpt.wait)
    hashed = bytes_hashed()
    tag, select_s = timed(lambda: select_resume(ckpt.directory, "auto"))
    hashed_resume = bytes_hashed() - hashed
    _, load_s = timed(lambda: ckpt.load(tag))
    marker = read_marker(ckpt.directory / tag)
    assert marker is not None and marker.files is not None
    destroy_groups()
    assert tag == "step_00000003", tag
    return {
        "save_s": save_s,
        "async_s": async_s,
        "first_async_s": first_async_s,
        "async_total_s": async_s + wait_s,
        "select_s": select_s,
        "load_s": load_s,
        "hashed_save": hashed_save,
        "hashed_resume": hashed_resume,
        "written": sum(r.size for r in written.values()),
        "resumed_bytes": sum(r.size for r in marker.files.values()),
        "files": len(marker.files),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        ranks = spawn_ranks(_rank, args.world, args, tmp)
    first = ranks[0]
    return {
        "params": args.params,
        "world": args.world,
        "zero_stage": args.zero,
        "sync_blocking_s": max(r["save_s"] for r in ranks),
        "async_blocking_s": max(r["async_s"] for r in ranks),
        "async_first_blocking_s": max(r["first_async_s"] for r in ranks),
        "async_total_s": max(r["async_total_s"] for r in ranks),
        "bytes_written": sum(r["written"] for r in ranks),
        "bytes_resumed": first["resumed_bytes"],
        "files": first["files"],
        "bytes_hashed_at_save": sum(r["hashed_save"] for r in ranks),
        "bytes_hashed_at_resume": sum(r["hashed_resume"] for r in ranks),
        "resume_select_s": max(r["select_s"] for r in ranks),
        "resume_load_s": max(r["load_s"] for r in ranks),
    }


def main(argv: list[str]) -> None:
    args = _parse(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result))
        return
    mib = 2**20
    print(
        f"{args.params:,} parameters, {args.world} ranks, ZeRO {args.zero}: "
        f"{result['bytes_written'] / mib:,.0f} MiB in {result['files']} files"
    )
    print(
        f"save blocks training {result['sync_blocking_s']:.2f} s synchronous, "
        f"{result['async_blocking_s']:.2f} s in the background "
        f"(published after {result['async_total_s']:.2f} s)"
    )
    print(
        f"hashed at save {result['bytes_hashed_at_save'] / mib:,.0f} MiB, at resume "
        f"{result['bytes_hashed_at_resume'] / mib:,.0f} MiB (all ranks); resume: select "
        f"{result['resume_select_s']:.2f} s, load {result['resume_load_s']:.2f} s"
    )
