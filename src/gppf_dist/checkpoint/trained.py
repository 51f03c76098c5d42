"""A finished (or interrupted) run, loaded for tools: its config, its tasks and the weights of its
newest complete checkpoint, with no engine or optimizer (`gppf-extract`, `gppf-export`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gppf_dist.checkpoint.layout import checkpoints_dir
from gppf_dist.checkpoint.manager import find_latest, step_of_tag
from gppf_dist.checkpoint.weights import load_weights
from gppf_dist.config.load import load_run_config
from gppf_dist.data.format.manifest import Manifest, load_manifest
from gppf_dist.model.build import GppfModel, build_model
from gppf_dist.tasks.base import TaskSpec
from gppf_dist.tasks.registry import make_spec


@dataclass
class TrainedRun:
    model: GppfModel
    """In eval mode, with the checkpoint's weights and its step's routes."""
    specs: dict[str, TaskSpec]
    cfg: Any
    manifest: Manifest
    step: int
    """The checkpoint's step."""


def load_run(run_dir: Path) -> TrainedRun:
    run_dir = Path(run_dir)
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise ValueError(f"`run_dir`={str(run_dir)!r} has no config.yaml")
    cfg = load_run_config(config)
    manifest = load_manifest(Path(cfg.data.root))
    specs = {
        name: make_spec(
            name, t.type, (t.input_size[0], t.input_size[1]), manifest.tasks[name].label_space
        )
        for name, t in cfg.simt.active_tasks().items()
    }
    ckpt_dir = checkpoints_dir(run_dir)
    tag = find_latest(ckpt_dir)
    if tag is None:
        raise ValueError(f"`run_dir`={str(run_dir)!r} has no complete checkpoint in {ckpt_dir}")
    model = build_model(cfg.model, specs)
    load_weights(model, model.param_owners(), ckpt_dir / tag)
    step = step_of_tag(tag)
    model.set_step(step)
    return TrainedRun(model.eval(), specs, cfg, manifest, step)
