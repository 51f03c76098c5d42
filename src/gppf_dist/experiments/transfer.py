"""`gppf-bench transfer`: what pre-training buys, the GPPF paper's protocol in miniature.

    gppf-bench transfer                        # the table (8-15 minutes on 2 CPU cores)
    gppf-bench transfer --json --tasks count --seeds 1 --steps 10 --pretrain-steps 4

1. Writes the synthetic pre-training corpus (`gppf-shards synth`) and the downstream suite
   (`gppf-shards synth-downstream`) into the work dir (`--out`, else a temporary one).
2. Pre-trains the demo GPPF (`experiment=demo`) and the dense multi-task baseline with the same
   activated compute (`experiment=demo_dense`) for `--pretrain-steps` steps each with the real
   `gppf-train`, keeps both runs' final evaluation on the 8 pre-training tasks, and exports both
   with `gppf-export`.
3. Fine-tunes with the real `gppf-finetune`, for every downstream task x model x tune x seed:
   models `pretrained` (the GPPF export, `finetune.route=auto`), `scratch` (the same
   architecture from random weights, `finetune.pretrained=none finetune.route=random`) and
   `dense` (the dense export, `finetune.route=all`: its one lego per layer); tunes `linear`
   (head only: for `scratch` a linear probe on random features) and `path`. `finetune.seed` and
   `trainer.seed` are the seed; every run uses the same steps, batch, learning rate and input
   size (the suite's 64 x 64), one setting for all tasks as in VTAB. The figure is `top1` of
   the run's `eval.json` on the task's fixed test set.
4. Prints per task and tune the mean ± std (over seeds) top-1 of each model, and the
   pre-training comparison; `--json` prints one object instead:
   `{"tasks": {t: {"linear": {...}, "path": {...}, "pretrained", "scratch", "dense"}},
   "pretraining": {"gppf": {...}, "dense": {...}}, "config": {...}, "seconds": s}`, where a
   tune's object holds each model's mean, `std` and per-seed `runs`, and the task's top-level
   `pretrained` / `scratch` / `dense` are the `path` means.

Every CLI runs as its own process under `launcher=none` (one worker, this process's
environment with RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT set, as torchrun would), `--jobs` of
them at a time, each on one intra-op thread. Progress goes to stderr. Run again with the same
`--out`, commands that finished there with the same arguments are reused, not rerun
(counted in `config.reused_runs`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gppf_dist.dist.env import free_port

DEFAULT_TASKS = ("dtd_like", "fine_objects", "count", "grid_pos")
"""Two natural-like and two structured tasks of the suite."""
MODELS = ("pretrained", "scratch", "dense")
TUNES = ("linear", "path")
PRETRAIN = {"gppf": "demo", "dense": "demo_dense"}
"""Pre-training run name -> its experiment config."""
INPUT_SIZE = 64
"""The downstream suite's image side (data/synth/downstream.py)."""
METRIC = "top1"
BIN = Path(sys.executable).parent
COMMON = ("logger=none", "trainer.progress=false", "launcher=none")
ATTEMPTS = 3


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gppf-bench transfer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--steps", type=int, default=100, help="fine-tuning steps per run")
    p.add_argument("--pretrain-steps", type=int, default=300, help="pre-training steps per model")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per configuration")
    p.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS), help="downstream tasks")
    p.add_argument("--lr", type=float, default=3e-3, help="fine-tuning learning rate (all runs)")
    p.add_argument("--batch", type=int, default=32, help="fine-tuning global batch")
    p.add_argument("--train-per-task", type=int, default=1000, help="downstream training set")
    p.add_argument("--test-per-task", type=int, default=500, help="downstream test set")
    p.add_argument("--jobs", type=int, default=2, help="CLI processes at a time")
    p.add_argument("--out", type=Path, help="work dir to keep (default: a temporary one)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    for key in ("steps", "pretrain_steps", "seeds", "batch", "jobs", "train_per_task"):
        if getattr(args, key) < 1:
            raise ValueError(f"`--{key.replace('_', '-')}` must be >= 1, got {getattr(args, key)}")
    if args.test_per_task < 1:
        raise ValueError(f"`--test-per-task` must be >= 1, got {args.test_per_task}")
    if args.lr <= 0:
        raise ValueError(f"`--lr` must be > 0, got {args.lr}")
    from gppf_dist.data.synth.downstream import DOWNSTREAM_TASKS

    known = [t.name for t in DOWNSTREAM_TASKS]
    unknown = [t for t in args.tasks if t not in known]
    if unknown or len(set(args.tasks)) != len(args.tasks):
        raise ValueError(f"`--tasks` {args.tasks}: each once, from {known}")
    return args


@dataclass
class Runner:
    """Runs the CLIs as subprocesses and reports progress on stderr.

    A command that finished before with the same arguments (its `<log>.done` file holds them:
    a kept `--out` dir run again) is not run again; `reused` counts those. A worker whose
    rendezvous port was taken between choosing it and binding it (EADDRINUSE) is started
    again on another port, at most `ATTEMPTS` times in all."""

    jobs: int
    started: float = field(default_factory=time.perf_counter)
    reused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, argv: Sequence[str], log: Path) -> bool:
        """Run `argv` (output to `log`) unless it finished before; whether it ran."""
        done = log.with_name(log.name + ".done")
        if done.is_file() and json.loads(done.read_text(encoding="utf-8")) == list(argv):
            return False
        env = dict(os.environ, OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu")
        env.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
        log.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(ATTEMPTS):
            env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
            with log.open("w", encoding="utf-8") as out:
                proc = subprocess.run(list(argv), stdout=out, stderr=subprocess.STDOUT, env=env)
            text = log.read_text(encoding="utf-8", errors="replace")
            if proc.returncode == 0 or "EADDRINUSE" not in text:
                break
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{text[-3000:]}")
        done.write_text(json.dumps(list(argv)) + "\n", encoding="utf-8")
        return True

    def each(self, work: list[tuple[Sequence[str], Path, str]]) -> None:
        """Run every (argv, log, label), `jobs` at a time; after all of them, the first failure
        is raised."""

        def one(item: tuple[Sequence[str], Path, str]) -> None:
            argv, log, label = item
            ran = self.run(argv, log)
            with self.lock:
                self.reused += not ran
                took = time.perf_counter() - self.started
                said = label if ran else f"{label}: reused from an earlier run"
                print(f"[{took:6.0f}s] {said}", file=sys.stderr, flush=True)

        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            futures = [pool.submit(one, item) for item in work]
        for future in futures:
            future.result()


def write_data(work: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    """The pre-training corpus and the downstream suite (as the two `gppf-shards` commands)."""
    from gppf_dist.data.synth.corpus import write_synthetic_corpus
    from gppf_dist.data.synth.downstream import write_downstream_suite

    corpus, downstream = work / "corpus", work / "downstream"
    write_synthetic_corpus(corpus)
    write_downstream_suite(
        downstream,
        train_per_task=args.train_per_task,
        test_per_task=args.test_per_task,
        tasks=list(args.tasks),
    )
    return corpus, downstream


def pretrain(runner: Runner, work: Path, corpus: Path, steps: int) -> dict[str, Any]:
    """Both models pre-trained (`gppf-train`) and exported (`gppf-export`); their final eval."""
    todo = []
    for name, experiment in PRETRAIN.items():
        argv = [
            str(BIN / "gppf-train"), f"experiment={experiment}", f"data.root={corpus}",
            f"run.dir={work / 'pretrain' / name}", f"trainer.max_steps={steps}",
            f"trainer.checkpoint_every={steps}", "trainer.eval_at_start=false", *COMMON,
        ]  # fmt: skip
        todo.append((argv, work / "logs" / f"pretrain_{name}.log", f"pre-trained {name}"))
    runner.each(todo)
    exports = [
        (
            [
                str(BIN / "gppf-export"),
                f"run_dir={work / 'pretrain' / name}",
                f"out={work / 'export' / name}",
            ],
            work / "logs" / f"export_{name}.log",
            f"exported {name}",
        )  # fmt: skip
        for name in PRETRAIN
    ]
    runner.each(exports)
    return {name: _eval(work / "pretrain" / name)["tasks"] for name in PRETRAIN}


def _eval(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "eval.json").read_text(encoding="utf-8"))


def finetune_argv(
    work: Path, downstream: Path, task: str, model: str, tune: str, seed: int,
    args: argparse.Namespace,
) -> list[str]:  # fmt: skip
    """The `gppf-finetune` command of one run."""
    source = {
        "pretrained": [f"finetune.pretrained={work / 'export' / 'gppf'}", "finetune.route=auto"],
        "scratch": ["finetune.pretrained=none", "model=gppf_r50_tiny", "finetune.route=random"],
        "dense": [f"finetune.pretrained={work / 'export' / 'dense'}", "finetune.route=all"],
    }[model]
    return [
        str(BIN / "gppf-finetune"), *source, f"data.root={downstream}", f"finetune.task={task}",
        f"finetune.tune={tune}", f"finetune.seed={seed}", f"trainer.seed={seed}",
        f"finetune.batch_size={args.batch}", f"finetune.input_size=[{INPUT_SIZE},{INPUT_SIZE}]",
        f"trainer.max_steps={args.steps}", f"trainer.checkpoint_every={args.steps}",
        f"trainer.lr={args.lr}", "trainer.eval_at_start=false",
        f"run.dir={_run_dir(work, task, model, tune, seed)}", *COMMON,
    ]  # fmt: skip


def _run_dir(work: Path, task: str, model: str, tune: str, seed: int) -> Path:
    return work / "finetune" / task / f"{model}_{tune}_s{seed}"


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def collect(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Per task: per tune, each model's mean, std and per-seed top-1; and the path means."""
    out: dict[str, Any] = {}
    for task in args.tasks:
        entry: dict[str, Any] = {}
        for tune in TUNES:
            row: dict[str, Any] = {"std": {}, "runs": {}}
            for model in MODELS:
                values = [
                    float(_eval(_run_dir(work, task, model, tune, s))["tasks"][task][METRIC])
                    for s in range(args.seeds)
                ]
                row[model], row["std"][model] = _mean_std(values)
                row["runs"][model] = values
            entry[tune] = row
        for model in MODELS:
            entry[model] = entry["path"][model]
        entry["routes"] = {  # the route `auto` chose for the pre-trained GPPF, per seed
            tune: [
                json.loads(
                    (_run_dir(work, task, "pretrained", tune, s) / "route.json").read_text()
                )["route"]
                for s in range(args.seeds)
            ]
            for tune in TUNES
        }
        out[task] = entry
    return out


def run(argv: list[str]) -> dict[str, Any]:
    """The whole benchmark; returns what `--json` prints."""
    return measure(_parse(argv))


def measure(args: argparse.Namespace) -> dict[str, Any]:
    start = time.perf_counter()
    runner = Runner(args.jobs)
    with tempfile.TemporaryDirectory(prefix="gppf-transfer-") as tmp:
        work = Path(args.out) if args.out else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        corpus, downstream = write_data(work, args)
        print(f"[{time.perf_counter() - start:6.0f}s] data written to {work}", file=sys.stderr)
        pretraining = pretrain(runner, work, corpus, args.pretrain_steps)
        todo = [
            (
                finetune_argv(work, downstream, task, model, tune, seed, args),
                work / "logs" / f"{task}_{model}_{tune}_s{seed}.log",
                f"fine-tuned {task} {model} {tune} seed {seed}",
            )
            for seed in range(args.seeds)
            for task in args.tasks
            for model in MODELS
            for tune in TUNES
        ]
        runner.each(todo)
        tasks = collect(work, args)
    config = {
        key: getattr(args, key)
        for key in ("steps", "pretrain_steps", "seeds", "tasks", "lr", "batch", "jobs")
    }
    config.update(train_per_task=args.train_per_task, test_per_task=args.test_per_task,
                  finetunes=len(todo), metric=METRIC, reused_runs=runner.reused)  # fmt: skip
    return {
        "tasks": tasks,
        "pretraining": {**pretraining, "steps": args.pretrain_steps},
        "config": config,
        "seconds": time.perf_counter() - start,
    }


def table(result: dict[str, Any]) -> str:
    cfg = result["config"]
    lines = [
        f"downstream top-1 (mean ± std over {cfg['seeds']} seeds), {cfg['steps']} fine-tuning "
        f"steps after {cfg['pretrain_steps']} pre-training steps:",
        "",
        f"{'task':14s} {'tune':7s} {'pretrained':>15s} {'scratch':>15s} {'dense':>15s}",
    ]
    for task, entry in result["tasks"].items():
        for tune in TUNES:
            row = entry[tune]
            cells = [f"{row[m]:.3f} ± {row['std'][m]:.3f}" for m in MODELS]
            lines.append(f"{task:14s} {tune:7s} " + " ".join(f"{c:>15s}" for c in cells))
    pre = result["pretraining"]
    lines += ["", "pre-training tasks (final eval): GPPF vs dense baseline", ""]
    lines.append(f"{'task':12s} {'metric':10s} {'gppf':>8s} {'dense':>8s}")
    for task, metrics in sorted(pre["gppf"].items()):
        for name, value in metrics.items():
            other = pre["dense"].get(task, {}).get(name, float("nan"))
            lines.append(f"{task:12s} {name:10s} {value:8.4f} {other:8.4f}")
    lines += ["", f"{cfg['finetunes']} fine-tunes in {result['seconds']:.0f} s"]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    try:
        args = _parse(argv)
        result = measure(args)
    except (ValueError, RuntimeError) as err:
        raise SystemExit(f"gppf-bench transfer: {err}") from None
    print(json.dumps(result) if args.json else table(result), flush=True)
