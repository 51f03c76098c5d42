"""Training runs on reused worker processes: what a launcher's workers do, without paying a
fresh interpreter's imports per run.

A run here is the CLI's path minus the process start: the real Hydra composition of
`gppf-train`'s config (`experiment=demo` and the test's overrides), the launcher's checks and
`<run.dir>/config.yaml` (`cli.train.prepare`), then `engine.worker.run_worker` on every rank of a
real gloo process group, as `gppf-train launcher=none` runs under torchrun. The ranks are spawned
once per test session and kept: a worker's imports (torch, torch._dynamo, DeepSpeed) cost ~6 CPU-s
a process on the 2-core CI machine, ~75% of a 5-step demo run. Each run gets a fresh rendezvous
port (so a fresh attempt for the heartbeats and watchdog) and tears its process group down
the normal way, so one run leaves nothing to the next: a test here compares runs of one pool
with each other, and `tests/integration/test_simt_cli.py` and `test_expert_parallel_cli.py` each
check a pooled run against `gppf-train`'s own.

A rank that raises, or a run past its deadline, ends every process of the pool (a peer may be
blocked in a collective) and raises here with the rank's traceback; the next run starts a new
pool.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing as mp
import os
import queue
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gppf_dist.dist.env import free_port

RUN_DEADLINE_S = 600
"""Longest a run may take on the 2-core machine before the pool is ended (a demo run: 4-8 s)."""

CLI_DEFAULTS = ("experiment=demo", "logger=none", "trainer.progress=false",
                "trainer.eval_batch_size=16")  # fmt: skip
"""What `tests/integration/test_train_cli.py::train_cmd` passes to every `gppf-train`."""


def _rank_loop(rank: int, jobs: Any, results: Any) -> None:
    """One pooled rank: run each job with the launcher's variables for this rank, report
    (rank, ok, value or traceback); `None` ends the loop."""
    while (job := jobs.get()) is not None:
        fn, args, env = job
        os.environ.update(env, RANK=str(rank), LOCAL_RANK=str(rank))
        try:
            results.put((rank, True, fn(*args)))
        except BaseException:  # noqa: BLE001 - reported to the test, which raises it
            results.put((rank, False, traceback.format_exc()))


class RankPool:
    """`size` spawned processes that run jobs on their first `world` ranks, on demand."""

    def __init__(self, size: int) -> None:
        ctx = mp.get_context("spawn")  # fresh interpreters: no forked gloo state
        self.size = size
        self._jobs = [ctx.Queue() for _ in range(size)]
        self._results = ctx.Queue()
        # Not daemons: a rank starts its own decode workers (`data.num_workers`); `close` ends them.
        self._procs = [
            ctx.Process(target=_rank_loop, args=(r, self._jobs[r], self._results))
            for r in range(size)
        ]
        for proc in self._procs:
            proc.start()
        atexit.register(self.close)

    @property
    def alive(self) -> bool:
        return all(p.is_alive() for p in self._procs)

    def run(self, world: int, fn: Callable[..., Any], *args: Any) -> list[Any]:
        """`fn(*args)` on ranks 0..world-1 of one fresh process group's environment; their
        results in rank order."""
        if not 1 <= world <= self.size:
            raise ValueError(f"world {world} does not fit a pool of {self.size}")
        env = {
            "WORLD_SIZE": str(world),
            "LOCAL_WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(free_port()),
            "OMP_NUM_THREADS": "1",
            "DS_ACCELERATOR": "cpu",
        }
        for rank in range(world):
            self._jobs[rank].put((fn, args, env))
        out: dict[int, Any] = {}
        try:
            while len(out) < world:
                rank, ok, value = self._results.get(timeout=RUN_DEADLINE_S)
                if not ok:
                    raise RuntimeError(f"rank {rank} of {world} raised:\n{value}")
                out[rank] = value
        except queue.Empty:
            self.close()
            raise TimeoutError(f"the run did not end within {RUN_DEADLINE_S} s") from None
        except BaseException:
            self.close()
            raise
        return [out[r] for r in range(world)]

    def close(self) -> None:
        for proc in self._procs:
            if proc.is_alive():
                proc.kill()
            proc.join()
        atexit.unregister(self.close)


def _train_rank(config_path: str, log_dir: str) -> None:
    """One rank of a run: the worker `gppf-train` would start, its output kept in
    `<log_dir>/rank<RANK>.log`."""
    from gppf_dist.config.load import load_run_config
    from gppf_dist.engine.worker import run_worker

    log = Path(log_dir, f"rank{os.environ['RANK']}.log")
    with log.open("w") as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        run_worker(load_run_config(config_path))


@dataclass(frozen=True)
class PoolRun:
    run_dir: Path
    stdout: str
    """Rank 0's output."""


class PoolRuns:
    """train(run_dir, shards, *overrides): a `gppf-train` run on the pool's ranks."""

    def __init__(self, compose: Callable[..., Any], size: int = 3) -> None:
        self._compose = compose
        self._size = size
        self._pool: RankPool | None = None

    def train(self, run_dir: Path, shards: Path, *overrides: str) -> PoolRun:
        from gppf_dist.cli.train import force_task_keys, prepare
        from gppf_dist.launch.registry import planned_world

        args = [*CLI_DEFAULTS, f"run.dir={run_dir}", f"data.root={shards}", *overrides]
        cfg = self._compose(*force_task_keys(args))  # as gppf-train's command line
        world = planned_world(cfg.launcher, None).size
        config_path = prepare(cfg)
        assert config_path is not None, "a dry run trains nothing"
        if self._pool is None or not self._pool.alive:
            self._pool = RankPool(self._size)
        with tempfile.TemporaryDirectory() as logs:
            self._pool.run(world, _train_rank, str(config_path), logs)
            return PoolRun(Path(run_dir), Path(logs, "rank0.log").read_text())

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
