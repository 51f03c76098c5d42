"""Typed configuration schema: the single source of truth behind the Hydra YAML in `conf/`.

Each section is a dataclass registered as a Hydra structured config (see `store.py`), so a
misspelled key or a value of the wrong type fails at composition time, before any worker starts.
`__post_init__` checks single-field rules; cross-field rules (world size, tasks vs. the shard
manifest) live in `validate.py`. Below the CLI layer, code only ever sees these dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gppf_dist.config.checks import check as _check
from gppf_dist.config.finetune import FinetuneSection
from gppf_dist.config.model import ModelConfig

DECODERS = ("turbo", "pillow", "gpu")
"""The image decoders `data/decode/jpeg.py` knows (a test keeps the two lists equal)."""


@dataclass(kw_only=True)
class RunSection:
    name: str = "default"
    """Run name; W&B display name and default run directory leaf."""
    dir: str = "runs/default"
    """Run directory: config.yaml, metrics.jsonl, checkpoints/, wandb/, eval.json. Keep it
    deterministic (no timestamps) so a restarted or requeued job finds its checkpoints."""


@dataclass(kw_only=True)
class TrainerSection:
    max_steps: int = 100
    max_nonfinite_steps: int = 5
    """A step whose loss or gradients are not finite changes no parameter or optimizer state
    (it is skipped on every rank); after this many such steps in a row the run stops, naming
    the tasks."""
    seed: int = 0
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 10
    grad_clip: float = 1.0
    """Global gradient-norm clip (0 disables)."""
    router_adam_eps: float = 1e-3
    """Adam epsilon of the router logits: keeps rounding-level noise in near-zero gradients from
    flipping top-k routes (see engine/optim.py)."""
    log_every: int = 1
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    checkpoint_async: bool = True
    """Periodic saves copy the state to host memory at the step boundary and write, hash and
    publish it in the background (checkpoint/store.py); the last save and a preemption's are
    synchronous, and at most one save is in flight."""
    eval_at_start: bool = True
    """Evaluate before the first step too, so eval.json shows what training changed."""
    eval_batch_size: int = 32
    progress: bool = True
    device: str = "auto"
    """`auto` picks CUDA when available, else CPU."""
    precision: str = "fp32"
    """fp32, or bf16: forward and losses under bf16 autocast, with fp32 parameters, gradients
    and optimizer state (so SIMT's exact reductions are unchanged)."""
    channels_last: bool = False
    """Images in NHWC memory format: convolutions follow their input's format, so activations
    run NHWC (faster on GPUs), and the model's convolution weights are converted too."""
    activation_checkpointing: bool = False
    """Recompute every lego layer's mixture in the backward pass instead of keeping its
    activations (less memory for large inputs, about one more forward of the legos in time);
    losses and gradients are unchanged."""
    tf32: bool = True
    """CUDA only: TF32 tensor-core matmuls and convolutions for fp32 work (what GPU users expect;
    set false for bit-level comparisons across world sizes on a GPU)."""
    cudnn_benchmark: bool = True
    """CUDA only: let cuDNN time its convolution algorithms per input shape on first use."""
    peak_tflops: float | None = None
    """One device's peak TFLOP/s at the training precision, for `mfu` in the step logs. None:
    a known GPU's dense bf16 peak in a bf16 run (H100 SXM 989, H100 PCIe 756, H100 NVL 835,
    H200 989, A100 312: `dist/peak.py`); otherwise no `mfu` and no `model_tflops` (counting the
    model's FLOPs costs rank 0 a few seconds at start, spent only where MFU is logged)."""
    device_memory_gib: float = 0.0
    """Memory of one device (e.g. 80 for an H100): before launch, each task's activation and the
    state are predicted without a GPU, and every task's `max_local_batch` is set to the largest
    micro-batch that fits (a lower one given by the user is kept); the dry run prints every
    rank's predicted peak (`preflight/memory_plan.py`). 0: no memory plan."""
    memory_margin: float = 0.1
    """Fraction of `device_memory_gib` kept free for what is not modelled: the CUDA context,
    communication buffers, cuDNN workspaces, the allocator's fragmentation."""
    cpu_threads: int = 0
    """Intra-op CPU threads per worker; 0 sizes them from the cores the local workers share,
    unless OMP_NUM_THREADS is set (see dist/threads.py)."""

    def __post_init__(self) -> None:
        _check(self.max_steps >= 0, "trainer.max_steps", self.max_steps, "must be >= 0")
        _check(
            self.max_nonfinite_steps >= 1,
            "trainer.max_nonfinite_steps",
            self.max_nonfinite_steps,
            "must be >= 1",
        )
        _check(self.lr > 0, "trainer.lr", self.lr, "must be > 0")
        _check(self.cpu_threads >= 0, "trainer.cpu_threads", self.cpu_threads, "must be >= 0")
        _check(
            self.device_memory_gib >= 0,
            "trainer.device_memory_gib",
            self.device_memory_gib,
            "must be >= 0 (0: no memory plan)",
        )
        _check(
            0 <= self.memory_margin < 1, "trainer.memory_margin", self.memory_margin, "in [0, 1)"
        )
        _check(self.log_every >= 1, "trainer.log_every", self.log_every, "must be >= 1")
        _check(
            self.peak_tflops is None or self.peak_tflops > 0,
            "trainer.peak_tflops",
            self.peak_tflops,
            "must be > 0 (or null: a known GPU's)",
        )
        _check(
            self.checkpoint_every >= 1,
            "trainer.checkpoint_every",
            self.checkpoint_every,
            "must be >= 1",
        )
        _check(
            self.keep_checkpoints >= 1, "trainer.keep_checkpoints", self.keep_checkpoints, ">= 1"
        )
        _check(
            self.device in ("auto", "cpu", "cuda"),
            "trainer.device",
            self.device,
            "must be auto, cpu or cuda",
        )
        _check(
            self.precision in ("fp32", "bf16"),
            "trainer.precision",
            self.precision,
            "must be fp32 or bf16",
        )


@dataclass(kw_only=True)
class TaskSection:
    """One pre-training task of the SIMT mix."""

    type: str
    """Task type: a key of `gppf_dist.tasks.registry.TASK_TYPES`."""
    weight: float = 1.0
    """w_t in the objective J = sum_t w_t * mean loss of task t over its global batch."""
    batch_size: int = 16
    """Global per-iteration batch B_t, split over the task's canonical streams."""
    input_size: list[int] = field(default_factory=lambda: [64, 64])
    """[height, width] fed to the backbone."""
    lr_mult: float = 1.0
    """Learning-rate multiplier for this task's own parameters (head, router row)."""
    every: int = 1
    """Run the task on steps where step % every == 0; 1 (SIMT: every step) by default."""
    cost: float = 1.0
    """Relative compute cost per sample, used by the cost-aware planner until it has measured
    costs (e.g. 10 for detection at 800 px against 1 for 224 px classification)."""
    max_local_batch: int = 0
    """Memory cap: at most this many samples per forward pass on one rank (0: no cap). A larger
    share runs as several micro-batches whose gradients accumulate; losses are unchanged."""


@dataclass(kw_only=True)
class DataSection:
    root: str = "shards"
    """Directory holding manifest.json and the per-task shards."""
    streams_per_task: int = 4
    """Canonical streams per task (world-size independent); B_t must be a multiple of it."""
    num_workers: int = 0
    """Decode worker processes per task loader (0: decode in the training process). Batches,
    positions and resume are identical for any value."""
    shards_per_group: int = 1
    """Shards whose samples a stream permutes together (a group is what its reader holds in
    memory): raise it for shards written sorted by other tools, so a batch mixes labels. Shards from
    `gppf-shards convert` are shuffled at write time and need 1; `gppf-shards verify` warns
    about shards whose label mix is far from their task's."""

    spec: str = ""
    """The corpus spec `data.root` is built from (`gppf-shards build --spec NAME`): a name in
    `gppf_dist/data/convert/specs/` or a path. A dry run (`simt.dry_run=true`) before the corpus
    exists plans with the spec's label spaces."""

    decoder: str = ""
    """JPEG decoding: `turbo` (libjpeg-turbo, reduced-size where the crop allows), `pillow`, or
    `gpu` (nvImageCodec / torchvision on the device; optional); empty: `$GPPF_DECODER`, else
    turbo. PNG masks and other formats always decode with Pillow."""

    def __post_init__(self) -> None:
        _check(self.streams_per_task >= 1, "data.streams_per_task", self.streams_per_task, ">= 1")
        _check(
            self.decoder in ("", *DECODERS),
            "data.decoder",
            self.decoder,
            f"one of {list(DECODERS)}, or empty for $GPPF_DECODER / turbo",
        )
        _check(self.num_workers >= 0, "data.num_workers", self.num_workers, "must be >= 0")
        _check(
            self.shards_per_group >= 1,
            "data.shards_per_group",
            self.shards_per_group,
            "must be >= 1",
        )


@dataclass(kw_only=True)
class SimtSection:
    tasks: dict[str, TaskSection] = field(default_factory=dict)
    """All known tasks, keyed by name (the shard directory name)."""
    only: list[str] = field(default_factory=list)
    """If non-empty, train only these tasks (names from `simt.tasks`)."""
    dry_run: bool = False
    """Print the task-to-rank plan and each rank's predicted load, then exit (no workers)."""
    planner: str = "cost"
    """static: ranks by batch size; cost: minimise the slowest rank from measured costs."""
    replan_every: int = 50
    """Steps between re-plans of the cost-aware planner (all ranks agree; no communication)."""
    task_overhead_s: float = 0.002
    """Predicted fixed cost of running a task on a rank once per step (planner input)."""

    def __post_init__(self) -> None:
        _check(self.planner in ("static", "cost"), "simt.planner", self.planner, "static or cost")
        _check(self.replan_every >= 1, "simt.replan_every", self.replan_every, "must be >= 1")

    def active_tasks(self) -> dict[str, TaskSection]:
        """The tasks this run trains, in a fixed (sorted) order shared by all ranks."""
        names = self.only or list(self.tasks)
        return {name: self.tasks[name] for name in sorted(names)}


@dataclass(kw_only=True)
class ParallelSection:
    ep_size: int = 1
    """Expert-parallel degree for lego units; must divide the world size."""
    zero_stage: int = 0
    """DeepSpeed ZeRO stage (0, 1 or 2)."""
    backend: str = "auto"
    """torch.distributed backend: auto (nccl on CUDA, gloo on CPU), nccl or gloo."""
    timeout_s: int = 600
    """Seconds a collective may wait for the other ranks before the process group fails it."""
    watchdog: bool = True
    """Each worker publishes its step and phase under `<run.dir>/heartbeat/`; a rank that has
    waited in one phase for nearly `timeout_s` (start-up: twice it) names the rank it waits for
    (stopped, gone, silent or behind: rank, step, phase) and ends, so the launcher tears the
    group down or restarts it (`health/watchdog.py`)."""
    remote_lego_cost: float = 0.25
    """Locality-aware placement (EP, frozen routes): predicted extra cost of a task whose lego
    calls are all remote, as a fraction of its compute per sample (0 disables)."""
    place_legos: bool = True
    """EP, resuming with frozen routes: place the legos each task group uses on one rank
    (`parallel/placement.py`) instead of the contiguous split."""
    check_splits: bool = False
    """Debug: before every expert-parallel exchange, peers compare their send and receive split
    sizes and raise naming the layer and ranks on a mismatch (one extra small exchange each; on
    NCCL a mismatch otherwise hangs or corrupts instead of raising)."""

    def __post_init__(self) -> None:
        _check(self.ep_size >= 1, "parallel.ep_size", self.ep_size, "must be >= 1")
        _check(self.timeout_s >= 1, "parallel.timeout_s", self.timeout_s, "must be >= 1")
        _check(
            self.remote_lego_cost >= 0, "parallel.remote_lego_cost", self.remote_lego_cost, ">= 0"
        )
        _check(self.zero_stage in (0, 1, 2), "parallel.zero_stage", self.zero_stage, "0, 1 or 2")
        _check(
            self.backend in ("auto", "nccl", "gloo"),
            "parallel.backend",
            self.backend,
            "must be auto, nccl or gloo",
        )


@dataclass(kw_only=True)
class LauncherSection:
    name: str = "local"
    """A registered launcher (`launch/registry.py`, checked there before any worker starts):
    local: torch elastic agent starting `nproc` workers; none: run one worker in this process
    (under torchrun/srun, which set RANK/WORLD_SIZE); deepspeed: DeepSpeed's launcher, one
    worker per slot of `hostfile`; slurm: submit `launch/slurm/gppf.sbatch` with sbatch (one
    srun task per node, torchrun inside), print the job id and return; or one of your own,
    registered by a file in `plugins`."""
    nproc: int = 2
    """Worker processes per node. launcher=slurm with `gpus_per_node` > 0: one per GPU (set to
    `gpus_per_node`); with `gpus_per_node`=0 (CPU nodes): `nproc` per node."""
    nnodes: int = 1
    """Nodes; launcher=slurm sets it from `nodes` (its check, before the config is saved)."""
    max_restarts: int = 0
    """launcher=local: how often the agent restarts all workers after one fails (they resume)."""
    master_port: int = 0
    """Rendezvous port for launcher=local and deepspeed; 0 picks a free one."""
    # ---- launcher=deepspeed -------------------------------------------------------------------
    hostfile: str | None = None
    """`<host> slots=<n>` per line; None: this machine with `nproc` slots."""
    master_addr: str | None = None
    """None: the hostfile's first host."""
    # ---- launcher=slurm (sbatch options; None / 0 leaves the cluster's default) ----------
    partition: str | None = None
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 0
    time: str | None = None
    """Time limit, e.g. "24:00:00"; the job checkpoints and requeues 120 s before it."""
    account: str | None = None
    sbatch_args: list[str] = field(default_factory=list)
    """Extra sbatch options, e.g. ["--qos=high", "--mem=0"]."""
    wait: bool = False
    """launcher=slurm: block until the job ends (`sbatch --wait`), requeues included."""
    # ---- a launcher of your own -------------------------------------------------------------
    options: dict[str, Any] = field(default_factory=dict)
    """The keys of a launcher registered by a plugin, beyond the ones above: on the command line
    `launcher.options.<key>=<value>`, or `options:` in its `conf/launcher/<name>.yaml`. Each
    launcher checks them (`launch/base.py:launcher_options`): a key it does not know is refused;
    the built-in launchers take none."""

    def __post_init__(self) -> None:
        _check(self.nproc >= 1, "launcher.nproc", self.nproc, "must be >= 1")
        _check(self.nnodes >= 1, "launcher.nnodes", self.nnodes, "must be >= 1")
        _check(self.max_restarts >= 0, "launcher.max_restarts", self.max_restarts, ">= 0")
        _check(self.nodes >= 1, "launcher.nodes", self.nodes, "must be >= 1")
        _check(self.gpus_per_node >= 0, "launcher.gpus_per_node", self.gpus_per_node, ">= 0")
        _check(self.cpus_per_task >= 0, "launcher.cpus_per_task", self.cpus_per_task, ">= 0")


@dataclass(kw_only=True)
class LoggerSection:
    name: str = "wandb"
    """wandb (from rank 0) or none; metrics.jsonl is always written."""
    mode: str = "offline"
    """W&B mode: offline (default; `wandb sync` later), online or disabled."""
    project: str = "gppf_dist"
    entity: str | None = None
    heatmap_every: int = 50
    """Log the lego-usage heatmap image every this many steps."""

    def __post_init__(self) -> None:
        _check(self.name in ("wandb", "none"), "logger", self.name, "must be wandb or none")
        _check(self.heatmap_every >= 1, "logger.heatmap_every", self.heatmap_every, ">= 1")
        _check(
            self.mode in ("offline", "online", "disabled"),
            "logger.mode",
            self.mode,
            "must be offline, online or disabled",
        )


@dataclass(kw_only=True)
class RunConfig:
    """The whole run. `gppf-train` composes it once; workers read the resolved YAML."""

    experiment: str | None = None
    """Name of the selected `conf/experiment/` delta (informational)."""
    resume: str = "auto"
    """auto: continue from the newest complete checkpoint in run.dir if any; never: start over
    (refuses a run.dir that already has checkpoints); or a checkpoint tag to load."""
    run: RunSection = field(default_factory=RunSection)
    trainer: TrainerSection = field(default_factory=TrainerSection)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataSection = field(default_factory=DataSection)
    simt: SimtSection = field(default_factory=SimtSection)
    parallel: ParallelSection = field(default_factory=ParallelSection)
    launcher: LauncherSection = field(default_factory=LauncherSection)
    logger: LoggerSection = field(default_factory=LoggerSection)
    finetune: FinetuneSection = field(default_factory=FinetuneSection)
    """Transfer to a downstream task (`gppf-finetune`); unused by pre-training."""
    plugins: list[str] = field(default_factory=list)
    """Modules (dotted names) or `.py` files of your own, imported in every process before the
    rest of the config is checked: task types and launchers that register themselves
    (`config/plugins.py`). Files are saved with absolute paths."""
