"""`gppf-finetune`: a pre-trained GPPF (a `gppf-export` folder) on a downstream task.

gppf-finetune finetune.pretrained=release/demo data.root=downstream finetune.task=count
gppf-finetune finetune.pretrained=none model=gppf_r50_tiny ... finetune.route=random   # scratch

Reads the task's type and label space from `data.root`'s manifest and the architecture from the
export, chooses the route once (`finetune/route_select.py`; recorded in the run's config.yaml
and, with the candidates' scores, in `<run.dir>/route.json`), then trains exactly like
`gppf-train` (same launchers, same exactness, resume) with the tune mode's parameters
(`finetune/backbone.py`), and writes the fine-tuned model as an export into `<run.dir>/export/`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from gppf_dist.cli.start import refuse, start
from gppf_dist.cli.train import CONF_DIR, prepare, train
from gppf_dist.config.load import load_run_config, to_run_config
from gppf_dist.config.model import ModelConfig
from gppf_dist.config.schema import RunConfig, TaskSection
from gppf_dist.config.suggest import did_you_mean

TOOL = "gppf-finetune"
ROUTE_FILE = "route.json"


def resolve(cfg: RunConfig) -> RunConfig:
    """The run's model and its one task, from the export and the manifest."""
    from gppf_dist.data.format.manifest import load_manifest
    from gppf_dist.model.pretrained import read_config

    ft = cfg.finetune
    if not ft.task:
        raise ValueError("`finetune.task` is required: a task name in data.root's manifest")
    manifest = load_manifest(Path(cfg.data.root))
    if ft.task not in manifest.tasks:
        hint = did_you_mean(ft.task, manifest.tasks, quote="'")
        raise ValueError(
            f"`finetune.task`={ft.task!r} is not in {cfg.data.root}/manifest.json{hint}"
        )
    kind = manifest.tasks[ft.task].type
    if ft.shots > 0 or ft.train_fraction < 1:
        cfg.data.root = str(_subset(cfg, manifest))
    size = list(ft.input_size)
    if ft.pretrained != "none":
        ft.pretrained = str(Path(ft.pretrained).resolve())  # workers may start elsewhere
        export = read_config(Path(ft.pretrained))
        cfg.model = ModelConfig(**export["model"])
        same = [t["input_size"] for t in export["tasks"].values() if t["type"] == kind]
        size = size or (list(same[0]) if same else [])
    if ft.route == "all":
        cfg.model = replace(cfg.model, top_k=cfg.model.num_legos)
    size = size or [224, 224]
    cfg.simt.tasks = {ft.task: TaskSection(type=kind, batch_size=ft.batch_size, input_size=size)}
    cfg.simt.only = []
    return cfg


def _subset(cfg: RunConfig, manifest: Any) -> Path:
    """The few-shot / fractional training set of this run (`data/tools/subset.py`), written once
    into
    `<run.dir>/subset` (every process of a torchrun start writes its own copy of the same bytes;
    the first rename wins) and reused when the run resumes."""
    from gppf_dist.data.tools.subset import select_subset, write_subset

    ft, root = cfg.finetune, Path(cfg.data.root)
    out = (Path(cfg.run.dir) / "subset").resolve()
    if (out / "manifest.json").is_file():
        return out
    keep = select_subset(root, manifest.task(ft.task), ft.shots, ft.train_fraction, ft.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".subset-", dir=out.parent))
    write_subset(root, manifest, ft.task, tmp, keep, ft.seed)
    try:
        os.rename(tmp, out)
    except OSError:  # another process of this start made it first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _saved_route(cfg: RunConfig) -> bool:
    """Reuse the route of an earlier start of this run (resume), if it was chosen alike."""
    path = Path(cfg.run.dir) / "config.yaml"
    if cfg.resume == "never" or not path.is_file():
        return False
    old = load_run_config(path).finetune
    ft = cfg.finetune
    same = (old.pretrained, old.task, old.route, old.seed) == (
        ft.pretrained,
        ft.task,
        ft.route,
        ft.seed,
    )
    if same and old.chosen_legos:
        ft.chosen_legos, ft.chosen_logits, ft.chosen_from = (
            old.chosen_legos,
            old.chosen_logits,
            old.chosen_from,
        )
    return same and bool(old.chosen_legos)


def choose(cfg: RunConfig, is_main: bool) -> None:
    from gppf_dist.data.format.manifest import load_manifest
    from gppf_dist.finetune.route_select import choose_route
    from gppf_dist.tasks.registry import make_spec

    if _saved_route(cfg):
        return
    ft, root = cfg.finetune, Path(cfg.data.root)
    manifest = load_manifest(root)
    t = cfg.simt.tasks[ft.task]
    spec = make_spec(ft.task, t.type, tuple(t.input_size), manifest.tasks[ft.task].label_space)
    route = choose_route(ft, cfg.model, spec, root, manifest)
    ft.chosen_legos, ft.chosen_logits, ft.chosen_from = route.legos, route.logits, route.source
    if is_main:
        out = Path(cfg.run.dir)
        out.mkdir(parents=True, exist_ok=True)
        record = {"route": route.source, "legos": route.legos, "scores": route.scores}
        (out / ROUTE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        scores = ", ".join(f"{k} {v:.4f}" for k, v in route.scores.items())
        print(
            f"route: {route.source} {route.legos}"
            + (f" (held-out loss: {scores})" if scores else ""),
            flush=True,
        )


def export_after(cfg: RunConfig) -> None:
    from gppf_dist.cli.export import export

    out = Path(cfg.run.dir) / "export"
    export(Path(cfg.run.dir), out)
    print(f"fine-tuned model exported to {out}", flush=True)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="finetune")
def _hydra_main(dcfg: DictConfig) -> None:
    try:
        cfg = resolve(to_run_config(dcfg))
        choose(cfg, int(os.environ.get("RANK", "0")) == 0)
        config_path = prepare(cfg)
    except ValueError as err:
        refuse(TOOL, err)
    if config_path is not None:
        train(cfg, config_path, after=lambda: export_after(cfg), tool=TOOL)


def no_task_keys(args: list[str]) -> list[str]:
    """Refuse `simt.tasks.*` and `simt.only`: `resolve` makes the run's one task from
    `finetune.*` and the manifest, so such a key would change nothing (gppf-train's
    `force_task_keys` has nothing to force here). The arguments are returned as given."""
    for arg in args:
        key, sep, _ = arg.lstrip("+~").partition("=")
        if sep and (key == "simt.only" or key == "simt.tasks" or key.startswith("simt.tasks.")):
            raise ValueError(
                f"`{key}` is not used by {TOOL}: its one task is `finetune.task` (from "
                "data.root's manifest), sized by `finetune.batch_size` and `finetune.input_size`"
            )
    return args


def main() -> None:
    start(TOOL, "choosing the route and starting the workers", _hydra_main, rewrite=no_task_keys)


if __name__ == "__main__":
    main()
