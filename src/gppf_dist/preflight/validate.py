"""Cross-field checks that must pass before any worker starts (DESIGN.md §5.7).

Single-field rules live in the schema's `__post_init__`; here we check what needs several
sections, the world size or the shard manifest. Every error names the key and the value.

The manifest is read once per process, for the run's tasks only, and returned to the caller.
Whether each shard file exists with its size (one `stat` a shard) is checked once per job or
node, not by every rank: by the launcher before it starts workers (`cli/train.py:prepare`; under
`launcher=none` by each node's local rank 0), never again by the workers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gppf_dist.checkpoint.layout import checkpoints_dir
from gppf_dist.checkpoint.manager import (
    complete_tags,
    is_complete,
    select_checkpoint,
    step_of_tag,
)
from gppf_dist.checkpoint.topology import Topology, check_topology
from gppf_dist.config.schema import RunConfig
from gppf_dist.data.decode.gpu import gpu_decoder
from gppf_dist.data.decode.jpeg import DECODER_ENV, default_decoder
from gppf_dist.data.format.manifest import (
    MANIFEST_NAME,
    Manifest,
    ShardInfo,
    check_shard_files,
    load_manifest,
)
from gppf_dist.data.load.streams import stream_units
from gppf_dist.tasks.registry import TASK_TYPES, make_spec


def validate_run(
    cfg: RunConfig,
    world_size: int,
    check_files: bool = True,
    data: bool = True,
    *,
    world_origin: str = "the workers' WORLD_SIZE",
    workers_here: bool = False,
) -> Manifest | None:
    """Every check; the manifest of the run's tasks, as read for them. `check_files`: also
    `stat` every shard of those tasks (see the module doc for who does). `data=False` (a dry
    run before the corpus exists) checks everything but the data and returns None.
    `world_origin` and `workers_here` are the launcher's word on the world (`launch.base.World`):
    where `world_size` comes from, for messages, and whether every worker runs on this machine."""
    _validate_tasks(cfg)
    _validate_parallel(cfg, world_size, world_origin)
    manifest = _validate_data(cfg, check_files) if data else None
    _validate_resume(cfg, world_size)
    if cfg.trainer.eval_batch_size < 1:  # the evaluation's loaders would refuse it at the end
        raise ValueError(f"`trainer.eval_batch_size`={cfg.trainer.eval_batch_size} must be >= 1")
    _validate_decoder(cfg, workers_here)
    return manifest


def run_label_spaces(cfg: RunConfig, manifest: Manifest | None) -> dict[str, dict[str, Any]]:
    """The label space of every active task: from the manifest, else (a dry run before the
    corpus exists) the planning label spaces of the corpus spec `data.spec`."""
    if manifest is not None:
        return manifest.label_spaces()
    from gppf_dist.data.convert.corpus_spec import load_corpus_spec

    spec = load_corpus_spec(cfg.data.spec)
    spaces = spec.planning_label_spaces()
    for name, task in cfg.simt.active_tasks().items():
        if name not in spec.tasks:
            raise ValueError(
                f"`simt.tasks.{name}`: task {name!r} is not in `data.spec`={cfg.data.spec!r} "
                f"(which has {sorted(spec.tasks)})"
            )
        if spec.tasks[name].type != task.type:
            raise ValueError(
                f"`simt.tasks.{name}.type`={task.type!r} but `data.spec`={cfg.data.spec!r} "
                f"says {spec.tasks[name].type!r}"
            )
    return spaces


def _validate_decoder(cfg: RunConfig, workers_here: bool) -> None:
    """The image decoder the loaders will use exists and, for `gpu`, works on this machine when
    the workers run here (a Slurm or multi-node launch checks on its nodes, at the first image)."""
    decoder = cfg.data.decoder or default_decoder()
    where = "data.decoder" if cfg.data.decoder else DECODER_ENV
    if decoder == "gpu" and workers_here:
        gpu_decoder(where)


def _validate_tasks(cfg: RunConfig) -> None:
    tasks = cfg.simt.tasks
    if not tasks:
        raise ValueError("`simt.tasks` is empty: declare at least one task")
    for name in cfg.simt.only:
        if name not in tasks:
            raise ValueError(
                f"`simt.only` names unknown task {name!r}; known tasks: {sorted(tasks)}"
            )
    for name, task in cfg.simt.active_tasks().items():
        key = f"simt.tasks.{name}"
        if task.type not in TASK_TYPES:
            raise ValueError(
                f"`{key}.type`={task.type!r} is not a task type; known: {sorted(TASK_TYPES)}"
            )
        if task.weight < 0:
            raise ValueError(f"`{key}.weight`={task.weight} must be >= 0")
        if task.lr_mult < 0:
            raise ValueError(f"`{key}.lr_mult`={task.lr_mult} must be >= 0")
        if task.every < 1:
            raise ValueError(f"`{key}.every`={task.every} must be >= 1")
        if task.every > 1 and cfg.parallel.zero_stage > 0:
            raise ValueError(
                f"`{key}.every`={task.every} needs `parallel.zero_stage`=0: with ZeRO "
                f"{cfg.parallel.zero_stage} DeepSpeed would update the absent task's parameters "
                "with zero gradients"
            )
        streams = cfg.data.streams_per_task
        if task.batch_size <= 0 or task.batch_size % streams:
            raise ValueError(
                f"`{key}.batch_size`={task.batch_size} must be a positive multiple of "
                f"`data.streams_per_task`={streams}"
            )
        if len(task.input_size) != 2 or min(task.input_size) < 16:
            raise ValueError(
                f"`{key}.input_size`={list(task.input_size)} must be [h, w], each >= 16"
            )
        if task.max_local_batch < 0:
            raise ValueError(
                f"`{key}.max_local_batch`={task.max_local_batch} must be >= 0 (0: no cap)"
            )


def _validate_parallel(cfg: RunConfig, world_size: int, world_origin: str) -> None:
    ep = cfg.parallel.ep_size
    if world_size % ep:
        raise ValueError(
            f"`parallel.ep_size`={ep} must divide the world size {world_size} ({world_origin})"
        )
    if cfg.model.num_legos % ep:
        raise ValueError(
            f"`parallel.ep_size`={ep} must divide `model.num_legos`={cfg.model.num_legos}"
        )


_read: dict[tuple[object, ...], Manifest] = {}
"""The last manifest read, by the identity of its file and the tasks: under launcher=none the
process that validated as the launcher goes on as the worker, and parses it once, not twice."""


def _load(root: Path, tasks: list[str], check_files: bool) -> Manifest:
    try:
        st = (root / MANIFEST_NAME).stat()
    except OSError:
        return load_manifest(root, tasks=tasks, check_files=check_files)  # names the problem
    key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size, tuple(tasks))
    manifest = _read.get(key)
    if manifest is None:
        manifest = load_manifest(root, tasks=tasks, check_files=False)
        _read.clear()
        _read[key] = manifest
    if check_files:
        check_shard_files(root, manifest)
    return manifest


def _validate_data(cfg: RunConfig, check_files: bool) -> Manifest:
    """Everything the workers would otherwise find out about the shards: each active task is in
    the manifest with the configured type, a usable label space, train samples for every
    canonical stream and a non-empty `val` split (every run ends with an evaluation)."""
    root = Path(cfg.data.root)
    active = cfg.simt.active_tasks()
    try:
        manifest = _load(root, sorted(active), check_files)
    except ValueError as err:
        hint = (
            ""
            if "gppf-shards upgrade" in str(err)
            else f". Create the synthetic corpus with `gppf-shards synth --out {cfg.data.root}` "
            "or convert a dataset first."
        )
        raise ValueError(f"`data.root`={cfg.data.root!r}: {err}{hint}") from err
    where = root / MANIFEST_NAME
    for name, task in active.items():
        if name not in manifest.tasks:
            listed = sorted(load_manifest(root, check_files=False).tasks)  # for the message
            raise ValueError(
                f"`simt.tasks.{name}`: unknown task {name!r}, not in {where} (which has {listed})"
            )
        entry = manifest.tasks[name]
        if entry.type != task.type:
            raise ValueError(
                f"`simt.tasks.{name}.type`={task.type!r} but the manifest says {entry.type!r}"
            )
        try:
            make_spec(name, task.type, (task.input_size[0], task.input_size[1]), entry.label_space)
        except ValueError as err:
            raise ValueError(f"{where}: label space of task {name!r}: {err}") from err
        _validate_train_split(cfg, name, entry.splits.get("train"), where)
        val = entry.splits.get("val")
        if not val or not sum(sh.samples for sh in val):
            what = "no split 'val'" if val is None else "an empty split 'val'"
            raise ValueError(
                f"task {name!r} has {what} in {where} (splits: {sorted(entry.splits)}); every "
                f"run ends with an evaluation on it: add one with `gppf-shards convert ... "
                f"--task {name} --split val`, or leave the task out with `simt.only`"
            )
    return manifest


def _validate_train_split(
    cfg: RunConfig, name: str, shards: list[ShardInfo] | None, where: Path
) -> None:
    """Every canonical stream of the task's train split has samples to read."""
    if shards is None:
        raise ValueError(f"task {name!r} has no split 'train' in {where}")
    streams = cfg.data.streams_per_task
    if len(shards) < streams:
        # More streams than shards: streams own parts of shards, read by byte range.
        unindexed = [sh.path for sh in shards if len(sh.offsets) != sh.samples + 1]
        samples = sum(sh.samples for sh in shards)
        if not shards or unindexed or samples < streams:
            why = (
                f"its shards have no sample offsets ({unindexed[0]!r}): run `gppf-shards "
                f"index --root {cfg.data.root}` to add them"
                if unindexed
                else f"it has {samples} samples"
            )
            raise ValueError(
                f"`data.streams_per_task`={streams} exceeds the {len(shards)} train shards "
                f"of task {name!r}, and {why}"
            )
    sizes = [sh.samples for sh in shards]
    for stream in range(streams):
        units = stream_units(name, sizes, streams, stream)
        if not sum(u.size for u in units):  # its reader would look for a sample forever
            raise ValueError(
                f"task {name!r} split 'train': canonical stream {stream} of "
                f"`data.streams_per_task`={streams} gets only empty shards "
                f"{[shards[u.shard].path for u in units]}"
            )


def _validate_resume(cfg: RunConfig, world_size: int) -> None:
    """Sizes only: the workers checksum the checkpoint they resume, once, in shares
    (`checkpoint.resume`); here a file of the wrong size (a truncated save) is refused and
    nothing is read."""
    ckpt_dir = checkpoints_dir(cfg.run.dir)
    if cfg.resume == "never":
        if complete_tags(ckpt_dir):
            raise ValueError(
                f"`resume`=never but `run.dir`={cfg.run.dir!r} already holds checkpoints; "
                "use resume=auto or another run.dir"
            )
        return
    if cfg.resume == "auto":
        tag = select_checkpoint(ckpt_dir, "auto", checksums=False).tag
        if tag is None:
            return
    else:
        step_of_tag(cfg.resume)
        tag = cfg.resume
        if not is_complete(ckpt_dir, tag):
            raise ValueError(
                f"`resume`={cfg.resume!r}: no complete checkpoint in {str(ckpt_dir)!r}"
            )
        select_checkpoint(ckpt_dir, tag, checksums=False)  # refuses it, naming the file
    now = Topology(world_size, cfg.parallel.ep_size, cfg.parallel.zero_stage)
    check_topology(ckpt_dir / tag, now)
