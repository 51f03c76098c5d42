"""The release format of a pre-trained GPPF: a folder with no pickle in it.

    config.json         architecture (`ModelConfig`), the lego pool (N, k), every task's type,
                        input size and label space, and each task's route (lego ids and gates
                        per lego layer) as the weights give it
    model.safetensors   every parameter and persistent buffer, by its state-dict name
    README.md           the model card (written by `gppf-export`)

The layout follows the local-folder convention of model hubs (config.json + model.safetensors +
README.md), so the folder can be uploaded as it is. `save_pretrained` writes the first two;
`load_pretrained` rebuilds the model from config.json and loads the tensors with safetensors only
(no `torch.load`, no pickle): missing or unexpected tensors raise a `ValueError` naming them
(or, with `strict=False`, are returned in the `LoadReport`), and the loaded routes are checked
against the ones config.json recorded.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from gppf_dist.config.model import ModelConfig
from gppf_dist.model.build import GppfModel, build_model
from gppf_dist.tasks.base import TaskSpec

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "gppf"
FORMAT_VERSION = 1


@dataclass
class LoadReport:
    """What loading found besides the tensors it used."""

    missing: list[str] = field(default_factory=list)
    """Tensors the model has and the file lacks (left at their initial values)."""
    unexpected: list[str] = field(default_factory=list)
    """Tensors in the file the model has no place for (ignored)."""
    meta: dict[str, Any] = field(default_factory=dict)
    """config.json's other entries (e.g. `step`, `run`)."""


def routes_of(model: GppfModel) -> dict[str, dict[str, list[list[float]]]]:
    """Per task, the lego ids and gates of every lego layer, as the model routes in eval mode."""
    was_training = model.training
    model.eval()
    out = {}
    with torch.no_grad():
        for task in model.task_names:
            route = model.router.route(task)
            out[task] = {
                "legos": [[int(i) for i in ids] for ids in route.indices],
                "gates": [[float(g) for g in row] for row in route.gates],
            }
    model.train(was_training)
    return out


def _task_entry(spec: TaskSpec) -> dict[str, Any]:
    return {"type": spec.type, "input_size": list(spec.input_size), "label_space": spec.label_space}


def save_pretrained(model: GppfModel, out: Path, meta: dict[str, Any] | None = None) -> None:
    """Write config.json and model.safetensors into `out` (created; files replaced atomically)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_name": "gppf_dist",
        "model": asdict(model.cfg),
        "num_legos": model.cfg.num_legos,
        "top_k": model.cfg.top_k,
        "tasks": {name: _task_entry(spec) for name, spec in model.specs.items()},
        "routes": routes_of(model),
        **(meta or {}),
    }
    _atomic(out / WEIGHTS_NAME, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
    text = json.dumps(config, indent=2, sort_keys=False) + "\n"
    _atomic(out / CONFIG_NAME, lambda p: Path(p).write_text(text, encoding="utf-8"))


def _atomic(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_config(directory: Path) -> dict[str, Any]:
    """config.json of an export, checked for the format and the keys loading needs."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise ValueError(f"{str(directory)!r} is not a GPPF export: it has no {CONFIG_NAME}")
    config = json.loads(path.read_text(encoding="utf-8"))
    if config.get("format") != FORMAT:
        raise ValueError(f"{path}: `format`={config.get('format')!r} is not {FORMAT!r}")
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{path}: `format_version`={config['format_version']} is newer than this gppf_dist "
            f"reads ({FORMAT_VERSION})"
        )
    for key in ("model", "tasks"):
        if not isinstance(config.get(key), dict):
            raise ValueError(f"{path}: `{key}` must be a mapping")
    return config


def specs_of(config: dict[str, Any]) -> dict[str, TaskSpec]:
    from gppf_dist.tasks.registry import make_spec

    return {
        name: make_spec(name, t["type"], tuple(t["input_size"]), t["label_space"])
        for name, t in config["tasks"].items()
    }


def from_pretrained(directory: Path | str, strict: bool = True) -> GppfModel:
    """The exported model in `directory`, in eval mode (safetensors only: nothing unpickled)."""
    return load_pretrained(Path(directory), strict)[0]


def load_pretrained(directory: Path, strict: bool = True) -> tuple[GppfModel, LoadReport]:
    """The exported model, in eval mode, and what loading found (see the module docstring)."""
    directory = Path(directory)
    config = read_config(directory)
    model = build_model(ModelConfig(**config["model"]), specs_of(config))
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise ValueError(f"{str(directory)!r} has no {WEIGHTS_NAME}")
    expected = model.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    with safe_open(str(weights), framework="pt") as f:
        for key in f.keys():  # noqa: SIM118 - safe_open has keys(), not iteration
            tensors[key] = f.get_tensor(key)
    report = LoadReport(
        missing=sorted(set(expected) - set(tensors)),
        unexpected=sorted(set(tensors) - set(expected)),
        meta={k: v for k, v in config.items() if k not in ("model", "tasks", "routes")},
    )
    if strict and (report.missing or report.unexpected):
        raise ValueError(
            f"{weights}: {len(report.missing)} missing tensors {report.missing[:5]}, "
            f"{len(report.unexpected)} unexpected {report.unexpected[:5]} (first 5 of each); "
            "load with strict=False to accept"
        )
    for key, value in tensors.items():
        if key in expected and value.shape != expected[key].shape:
            raise ValueError(
                f"{weights}: tensor {key!r} has shape {tuple(value.shape)}, the model built from "
                f"{CONFIG_NAME} expects {tuple(expected[key].shape)}"
            )
    model.load_state_dict({k: v for k, v in tensors.items() if k in expected}, strict=False)
    model.eval()
    recorded = config.get("routes")
    if recorded is not None and not report.missing:
        got = routes_of(model)
        for task, route in recorded.items():
            if got.get(task, {}).get("legos") != route["legos"]:
                raise ValueError(
                    f"{directory / CONFIG_NAME}: task {task!r} routes to {route['legos']}, the "
                    f"weights route it to {got.get(task, {}).get('legos')}"
                )
    return model, report
