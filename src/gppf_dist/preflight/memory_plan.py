"""The memory plan before launch: each task's largest micro-batch that fits a device, and each
rank's predicted peak under the SIMT plan (`trainer.device_memory_gib`).

A rank's peak is its state (parameters, gradients, optimizer; `model/memory.state_memory`) plus
the largest activation peak among its tasks' micro-batches (tasks run one after another, and a
task's share above its cap runs as several micro-batches: `simt.tasks.<t>.max_local_batch`).
The usable memory is `device_memory_gib` less `memory_margin` of it, which covers what is not
modelled: the CUDA context, communication buffers, cuDNN workspaces and the allocator's
fragmentation. Caps come before the plan (the planner splits work by them); peaks after it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from gppf_dist.config.schema import RunConfig
from gppf_dist.model.memory import (
    GIB,
    ActivationMemory,
    FakeModel,
    StateMemory,
    parameter_counts,
    state_memory,
)
from gppf_dist.simt.plan import Plan
from gppf_dist.simt.taskset import TaskSet


@dataclass(frozen=True)
class MemoryPlan:
    """What the planner knows about memory: the usable bytes, the state and each task's line."""

    usable: int
    state: StateMemory
    activations: dict[str, ActivationMemory]

    def fits(self, task: str) -> int:
        """The largest micro-batch of `task` within the usable memory (0: not even one)."""
        return self.activations[task].largest_batch(self.usable - self.state.total)

    def caps(self, given: dict[str, int]) -> dict[str, int]:
        """Per task, the micro-batch cap: the user's (`max_local_batch` > 0) where it is lower
        than what fits, else what fits. Raises naming the task when not one sample fits."""
        out = {}
        for task, line in self.activations.items():
            fit = self.fits(task)
            if fit < 1:
                raise ValueError(
                    f"task {task!r}: one sample needs {gib(self.state.total + line.at(1))} GiB "
                    f"(state {gib(self.state.total)} + activations {gib(line.at(1))}), more "
                    f"than the usable {gib(self.usable)} GiB of `trainer.device_memory_gib`: "
                    "turn on trainer.activation_checkpointing or trainer.precision=bf16, a "
                    "higher parallel.zero_stage or parallel.ep_size, or a smaller input_size"
                )
            user = given.get(task, 0)
            out[task] = min(user, fit) if user else fit
        return out

    def rank_peaks(self, plan: Plan, caps: dict[str, int]) -> list[int]:
        """Predicted peak bytes of every rank under `plan` (an idle rank holds its state)."""
        peaks = []
        for works in plan.per_rank:
            act = max(
                (self.activations[w.task].at(min(w.local_batch, caps[w.task])) for w in works),
                default=0,
            )
            peaks.append(self.state.total + act)
        return peaks


def gib(n: int | float) -> str:
    return f"{n / GIB:.2f}"


def predict_memory(cfg: RunConfig, taskset: TaskSet, world: int) -> MemoryPlan:
    """Build the model on fake tensors once and measure every active task's activation line
    (seconds per task on a CPU, any input size)."""
    trainer, par = cfg.trainer, cfg.parallel
    lego, other = parameter_counts(cfg.model, taskset.specs)
    state = state_memory(lego, other, world, par.ep_size, par.zero_stage)
    fake = FakeModel(cfg.model, taskset.specs, trainer.activation_checkpointing)
    lines = {t: fake.activation_memory(t, trainer.precision) for t in taskset.names}
    usable = int(trainer.device_memory_gib * (1 - trainer.memory_margin) * GIB)
    return MemoryPlan(usable, state, lines)


def plan_memory(
    cfg: RunConfig, world: int, label_spaces: dict[str, dict[str, Any]]
) -> MemoryPlan | None:
    """With `trainer.device_memory_gib`: predict, set every active task's `max_local_batch` to
    its cap in `cfg` (the config written for the workers carries them, so every rank plans with
    the same caps) and say so on rank 0. None without a device memory."""
    if not cfg.trainer.device_memory_gib:
        return None
    memory = predict_memory(cfg, TaskSet.build(cfg, label_spaces), world)
    active = cfg.simt.active_tasks()
    caps = memory.caps({n: t.max_local_batch for n, t in active.items()})
    for task, cap in caps.items():
        cfg.simt.tasks[task].max_local_batch = cap
    if int(os.environ.get("RANK", "0")) == 0:
        text = ", ".join(f"{t}={c}" for t, c in caps.items())
        print(
            f"memory plan for {cfg.trainer.device_memory_gib:g} GiB devices (state "
            f"{gib(memory.state.total)} GiB per rank): max_local_batch {text}",
            flush=True,
        )
    return memory
