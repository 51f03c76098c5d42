"""`gppf-model summary model=NAME [KEY=VALUE ...] [tasks=reference|demo] [--json]`.

Reads `conf/model/NAME.yaml` (the directory is `$GPPF_CONF_DIR` or the repository's `conf/`),
applies Hydra-style overrides of model fields (`ratio=0.5`, `model.ratio=0.5`,
`model.router.balance_weight=0`), builds the model for a task set and prints its total parameters
and, per task, input size, activated parameters and GMACs (see `gppf_dist.model.summary`).

Task sets: `reference` = the 8 tasks of DESIGN.md §2 at their reference sizes (224 px
classification, 800 px detection, ...), the default for full-size models; `demo` = the 8 tasks
at the sizes of the default SIMT config (`conf/simt/gppf15m_demo.yaml`), the default for the
tiny models (`gppf_r50_tiny`, `gppf_vit_tiny_dense`: a `tiny` part in the name). `--json` prints
exactly `{"params_total": int, "tasks": {"<task>": {"input": [h, w], "active_params": int,
"gmacs": float}}}`. Counting runs on the meta device (`model/meta_count.py`): seconds, any size.

Examples:
  gppf-model summary model=gppf_r50 --json
  gppf-model summary model=gppf_r50_tiny ratio=0.75 tasks=reference
  gppf-model summary model=gppf_vit_tiny model.router.balance_weight=0
"""

from __future__ import annotations

import json
import sys
from typing import Any

import torch
import yaml

from gppf_dist.cli.usage import wants_help
from gppf_dist.config.model import ModelConfig, model_config_from_dict
from gppf_dist.config.resources import conf_dir
from gppf_dist.model.build import build_model
from gppf_dist.model.summary import format_table, summarize
from gppf_dist.tasks.base import TaskSpec
from gppf_dist.tasks.demo import DEMO_TASKS
from gppf_dist.tasks.reference import reference_specs
from gppf_dist.tasks.registry import make_spec

CONF_DIR = conf_dir()
USAGE = "usage: gppf-model summary model=NAME [KEY=VALUE ...] [tasks=reference|demo] [--json]"


def load_model_config(name: str, overrides: dict[str, Any]) -> ModelConfig:
    """`conf/model/<name>.yaml` with `overrides` (dotted keys below `model.`) applied."""
    path = CONF_DIR / "model" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
        raise ValueError(f"`model`={name!r} has no config {path} (known: {known})")
    values = yaml.safe_load(path.read_text()) or {}
    for key, value in overrides.items():
        parts = key.split(".")
        node = values
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"`model.{key}`={value!r}: `{part}` is not a mapping")
        node[parts[-1]] = value
    return model_config_from_dict(values)


def demo_sim_specs() -> dict[str, TaskSpec]:
    """The default SIMT config's tasks (types and input sizes) with the demo label spaces."""
    path = CONF_DIR / "simt" / "gppf15m_demo.yaml"
    tasks = (yaml.safe_load(path.read_text()) or {}).get("tasks", {})
    specs = {}
    for name, task in tasks.items():
        space = DEMO_TASKS[name][2] if name in DEMO_TASKS else {}
        size = tuple(int(v) for v in task["input_size"])
        specs[name] = make_spec(name, task["type"], size, space)  # type: ignore[arg-type]
    return specs


def parse_args(args: list[str]) -> tuple[str, dict[str, Any], str | None, bool]:
    """(model name, model overrides, task set or None, --json)."""
    name, overrides, task_set, as_json = None, {}, None, False
    for arg in args:
        if arg == "--json":
            as_json = True
            continue
        if "=" not in arg:
            raise ValueError(f"argument {arg!r} must be KEY=VALUE or --json\n{USAGE}")
        key, raw = arg.split("=", 1)
        if key == "model":
            name = raw
        elif key == "tasks":
            if raw not in ("reference", "demo"):
                raise ValueError(f"`tasks`={raw!r} must be 'reference' or 'demo'")
            task_set = raw
        else:
            overrides[key.removeprefix("model.")] = yaml.safe_load(raw)
    if name is None:
        raise ValueError(f"`model` is required\n{USAGE}")
    return name, overrides, task_set, as_json


def is_tiny(name: str) -> bool:
    """A CPU-sized model (`gppf_r50_tiny`, `gppf_vit_tiny_dense`), summarised on the demo tasks."""
    return "tiny" in name.split("_")


def summary(args: list[str]) -> dict[str, Any]:
    name, overrides, task_set, as_json = parse_args(args)
    cfg = load_model_config(name, overrides)
    if task_set is None:
        task_set = "demo" if is_tiny(cfg.name) else "reference"
    specs = demo_sim_specs() if task_set == "demo" else reference_specs()
    torch.manual_seed(0)
    result = summarize(build_model(cfg, specs), specs)
    print(json.dumps(result) if as_json else format_table(result), flush=True)
    return result


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if wants_help(args, __doc__):
        return
    if not args or args[0] != "summary":
        raise SystemExit(f"{USAGE}\n(gppf-model --help for the keys and examples)")
    try:
        summary(args[1:])
    except ValueError as err:
        raise SystemExit(f"gppf-model: {err}") from None


if __name__ == "__main__":
    main()
