"""`gppf-bench memory`: the memory plan of a recipe, and the prediction checked against a real run.

gppf-bench memory --experiment gppf15m_r50 --world 64 --json   # per task: activations, caps
gppf-bench memory --check --json     # predicted vs measured peak of the same shapes, this device

The table: per task its input, global batch, the largest share a rank gets at `--world`,
activations (fixed + per sample), the activation peak at that share and the cap
(`max_local_batch`) that fits `trainer.device_memory_gib`; with the state per rank. No GPU is
needed (`model/memory.py`: fake tensors).

`--check` runs a forward + backward of the tiny models at a few shapes for real on this device
(CUDA when present, else the CPU) and compares its peak with the prediction for the same shapes.
Peaks are measured above the state (parameters and gradients allocated before): on CUDA from the
caching allocator's peak, on the CPU from the process's peak resident memory, in a fresh process
per shape with glibc's mmap threshold fixed low, so freed activations leave the resident set.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

GIB = 2**30

CHECK_SHAPES = (
    ("gppf_r50_tiny", "classification", 64, 64, 1024, "fp32"),
    ("gppf_r50_tiny", "detection", 96, 96, 256, "fp32"),
    ("gppf_r50_tiny", "segmentation", 128, 128, 128, "fp32"),
    ("gppf_vit_tiny", "classification", 64, 64, 256, "fp32"),
    ("gppf_vit_tiny", "pose", 64, 48, 256, "fp32"),
)
"""(model, task type, height, width, batch, precision) that `--check` runs; the batches make
activations of 200-300 MiB, far above the resident-set noise of a CPU process (~15 MiB: what
glibc keeps of freed memory varies from run to run)."""

GPU_SHAPES = (
    ("gppf_r50", "classification", 224, 224, 128, "bf16"),
    ("gppf_r50", "detection", 800, 800, 8, "bf16"),
    ("gppf_r50", "segmentation", 512, 512, 16, "bf16"),
    ("gppf_vit_b16", "classification", 224, 224, 128, "bf16"),
)
"""The real models at the recipes' sizes: what `make gpu-check` compares on a GPU."""

_LABELS: dict[str, dict[str, Any]] = {
    "classification": {"classes": [f"c{i}" for i in range(100)]},
    "detection": {"classes": [f"c{i}" for i in range(20)]},
    "segmentation": {"classes": [f"c{i}" for i in range(10)]},
    "pose": {"keypoints": [f"k{i}" for i in range(17)], "skeleton": []},
}


def _spec(kind: str, h: int, w: int) -> Any:
    from gppf_dist.tasks.registry import make_spec

    return make_spec("t", kind, (h, w), _LABELS[kind])


def _model_cfg(name: str) -> Any:
    from omegaconf import OmegaConf

    from gppf_dist.config.model import ModelConfig
    from gppf_dist.config.resources import model_yaml

    return ModelConfig(**OmegaConf.to_container(OmegaConf.load(model_yaml(name))))  # type: ignore[arg-type]


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measured_peak(name: str, kind: str, h: int, w: int, batch: int, precision: str) -> int:
    """Peak bytes above parameters and gradients of one real forward + backward on this device
    (see the module doc), the same computation `FakeModel.peak` predicts."""
    import resource

    import torch

    from gppf_dist.model.build import build_model
    from gppf_dist.model.memory import float_tensors

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    model = build_model(_model_cfg(name), {"t": _spec(kind, h, w)}).to(device).train()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    images = torch.randint(0, 255, (batch, 3, h, w), dtype=torch.uint8, device=device)
    dtype = torch.bfloat16 if precision == "bf16" else None

    def step(x: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            total = sum(t.float().sum() for t in float_tensors(model("t", x)))
        assert isinstance(total, torch.Tensor)
        total.backward()

    step(images[:1])  # kernels, thread pools and autograd's first allocations out of the way
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step(images)
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - base)
    base = _rss()
    step(images)
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def predicted_peak(name: str, kind: str, h: int, w: int, batch: int, precision: str) -> int:
    from gppf_dist.model.memory import FakeModel

    return FakeModel(_model_cfg(name), {"t": _spec(kind, h, w)}, False).peak("t", batch, precision)


REPEATS = 3
"""Fresh processes per shape; the least peak counts. What the resident set holds beyond the live
tensors (memory glibc has not returned yet) only adds, and one run in a test suite once measured
20% above the others (239 against 197 MiB), so the least of three is the computation's peak."""


def _measure(shape: tuple[str, str, int, int, int, str], env: dict[str, str]) -> int:
    out = subprocess.run(
        [sys.executable, "-m", "gppf_dist.bench.memory", "--measure", json.dumps(shape)],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if out.returncode:
        raise RuntimeError(f"measuring {shape} failed:\n{out.stderr[-2000:]}")
    return int(out.stdout.strip().splitlines()[-1])


def check(shapes: tuple[tuple[str, str, int, int, int, str], ...] = CHECK_SHAPES) -> list[dict]:
    """Predicted next to measured for each shape; each measurement in fresh processes."""
    rows = []
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    for shape in shapes:
        predicted = predicted_peak(*shape)
        measured = min(_measure(shape, env) for _ in range(REPEATS))
        name, kind, h, w, batch, precision = shape
        rows.append({
            "model": name, "task": kind, "input": [h, w], "batch": batch, "precision": precision,
            "predicted_mib": round(predicted / 2**20, 1),
            "measured_mib": round(measured / 2**20, 1),
            "ratio": round(predicted / measured, 3) if measured > 0 else None,
        })  # fmt: skip
    return rows


def recipe_table(experiment: str, world: int, overrides: list[str]) -> dict[str, Any]:
    """The memory plan of `experiment` at `world` ranks, as the dry run makes it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from gppf_dist.config.load import to_run_config
    from gppf_dist.config.resources import conf_dir
    from gppf_dist.config.store import register_schema
    from gppf_dist.data.format.manifest import load_manifest
    from gppf_dist.preflight.dry_run import saved_costs
    from gppf_dist.preflight.memory_plan import predict_memory
    from gppf_dist.preflight.validate import run_label_spaces
    from gppf_dist.simt.taskset import TaskSet

    register_schema()
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir())):
        cfg = to_run_config(compose("train", overrides=[f"experiment={experiment}", *overrides]))
    manifest = None
    if cfg.data.spec == "" or os.path.isfile(os.path.join(cfg.data.root, "manifest.json")):
        manifest = load_manifest(cfg.data.root, check_files=False)
    taskset = TaskSet.build(cfg, run_label_spaces(cfg, manifest))
    if not cfg.trainer.device_memory_gib:
        cfg.trainer.device_memory_gib = 80.0  # a table needs a device; 80 GB as an H100
    memory = predict_memory(cfg, taskset, world)
    caps = memory.caps({n: t.max_local_batch for n, t in taskset.active.items()})
    plan = taskset.plan(saved_costs(cfg)[0], world)
    share = {n: max((w.local_batch for r in plan.per_rank for w in r if w.task == n), default=0)
             for n in taskset.names}  # fmt: skip
    tasks = {}
    for name, line in memory.activations.items():
        t = taskset.active[name]
        tasks[name] = {
            "input": list(t.input_size), "batch_size": t.batch_size, "max_share": share[name],
            "act_fixed_gib": round(line.fixed / GIB, 3),
            "act_per_sample_mib": round(line.per_sample / 2**20, 2),
            "act_at_share_gib": round(line.at(min(share[name], caps[name])) / GIB, 3),
            "max_local_batch": caps[name],
        }  # fmt: skip
    peaks = memory.rank_peaks(plan, caps)
    st = memory.state
    return {
        "experiment": experiment, "world": world,
        "device_memory_gib": cfg.trainer.device_memory_gib,
        "usable_gib": round(memory.usable / GIB, 2),
        "precision": cfg.trainer.precision,
        "activation_checkpointing": cfg.trainer.activation_checkpointing,
        "zero_stage": cfg.parallel.zero_stage, "ep_size": cfg.parallel.ep_size,
        "state_gib": {"params": round(st.params / GIB, 3), "grads": round(st.grads / GIB, 3),
                      "optimizer": round(st.optimizer / GIB, 3)},
        "peak_mem_gib_max": round(max(peaks) / GIB, 3), "tasks": tasks,
    }  # fmt: skip


def _print_table(res: dict[str, Any]) -> None:
    st = res["state_gib"]
    print(
        f"{res['experiment']} at {res['world']} ranks, {res['precision']}, device "
        f"{res['device_memory_gib']:g} GiB (usable {res['usable_gib']}); state per rank: "
        f"parameters {st['params']}, gradients {st['grads']}, optimizer {st['optimizer']} GiB"
    )
    print(f"{'task':<12}{'input':>10}{'B_t':>7}{'share':>7}{'act MiB/sample':>16}"
          f"{'act@share GiB':>15}{'cap':>7}")  # fmt: skip
    for name, t in res["tasks"].items():
        size = "x".join(map(str, t["input"]))
        print(f"{name:<12}{size:>10}{t['batch_size']:>7}{t['max_share']:>7}"
              f"{t['act_per_sample_mib']:>16}{t['act_at_share_gib']:>15}"
              f"{t['max_local_batch']:>7}")  # fmt: skip
    print(f"predicted peak of the busiest rank: {res['peak_mem_gib_max']} GiB")


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="gppf-bench memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--experiment", default="gppf15m_r50", help="a conf/experiment/ name")
    p.add_argument("--world", type=int, default=64, help="ranks the plan is made for")
    p.add_argument("overrides", nargs="*", help="KEY=VALUE config overrides, as gppf-train's")
    p.add_argument("--check", action="store_true", help="predicted vs measured, this device")
    p.add_argument("--measure", help=argparse.SUPPRESS)  # one shape, in a child process
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.measure:
        print(measured_peak(*json.loads(args.measure)))
        return
    if args.check:
        rows = check(GPU_SHAPES if _cuda() else CHECK_SHAPES)
        if args.json:
            print(json.dumps({"check": rows}))
        else:
            for r in rows:
                print(f"{r['model']:<14}{r['task']:<15}{r['input']} x{r['batch']:<5} predicted "
                      f"{r['predicted_mib']} MiB, measured {r['measured_mib']} MiB, "
                      f"ratio {r['ratio']}")  # fmt: skip
        return
    res = recipe_table(args.experiment, args.world, args.overrides)
    if args.json:
        print(json.dumps(res))
    else:
        _print_table(res)


if __name__ == "__main__":
    main(sys.argv[1:])
