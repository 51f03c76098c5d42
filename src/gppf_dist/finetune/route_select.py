"""Choosing a downstream task's route before fine-tuning starts (`finetune.route`).

Runs once, in the `gppf-finetune` process, before any worker: the result (lego ids and gate
logits per lego layer) goes into the run's config, so every rank fine-tunes the same route and a
resumed run keeps it. Deterministic given the data, the export and `finetune.seed`.

- `inherit:<t>`: pre-training task t's route and gates, as the export recorded them;
- `auto`: every pre-training task's route is a candidate. A sample of the training split (at
  most `selection_samples`, spread over it) is cut into a fit part and a held-out part
  (`holdout_fraction`); for each candidate the backbone's features along that route are computed
  once, a fresh head (same seed for every candidate) is trained on the fit part for
  `route_steps` steps, and its mean loss on the held-out part is the candidate's score. The
  lowest loss wins (ties: the first name);
- `learn`: a new gate over the lego pool (the router's top-k with straight-through gates, as in
  pre-training) and a head are trained `route_steps` steps on the fit part with the backbone
  frozen; the learned top-k is the route;
- `all`: every lego (top_k = N), uniform gates; `random`: k legos per layer drawn with the seed,
  uniform gates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open

from gppf_dist.config.finetune import FinetuneSection
from gppf_dist.data.format.manifest import Manifest
from gppf_dist.data.load.eval_loader import iter_eval_batches
from gppf_dist.finetune.backbone import load_backbone
from gppf_dist.model.build import GppfModel, build_model
from gppf_dist.model.pretrained import WEIGHTS_NAME, read_config
from gppf_dist.tasks.base import TaskSpec
from gppf_dist.tasks.registry import get_task_type

HEAD_LR = 1e-2
GATE_LR = 5e-2
SELECTION_BATCH = 16


@dataclass
class ChosenRoute:
    legos: list[list[int]]
    logits: list[list[float]]
    source: str
    scores: dict[str, float] = field(default_factory=dict)
    """`auto`: each candidate's held-out loss."""


def _uniform(model: GppfModel, legos: list[list[int]], source: str) -> ChosenRoute:
    n = model.router.num_legos
    return ChosenRoute(legos, [[0.0] * n for _ in legos], source)


def _export_route(export_dir: Path, task: str) -> tuple[list[list[int]], list[list[float]]]:
    config = read_config(export_dir)
    routes = config.get("routes", {})
    if task not in routes:
        raise ValueError(
            f"`finetune.route`='inherit:{task}': the export has no task {task!r}; it has "
            f"{sorted(routes)}"
        )
    with safe_open(str(Path(export_dir) / WEIGHTS_NAME), framework="pt") as f:
        logits = f.get_tensor(f"router.logits.{task}")
    return routes[task]["legos"], logits.tolist()


def _selection_data(
    root: Path, manifest: Manifest, spec: TaskSpec, ft: FinetuneSection
) -> tuple[list[Any], list[Any]]:
    """(fit batches, held-out batches): at most `selection_samples` training samples spread
    over the split (the first few of each of as many contiguous parts), split by the seed."""
    task_type = get_task_type(spec.type)
    total = manifest.task(spec.name).num_samples("train")
    want = min(ft.selection_samples, total)
    per_part = 4
    parts = max(1, math.ceil(want / per_part))
    batches = []
    for part in range(parts):
        it = iter_eval_batches(
            root=root, manifest=manifest, task=spec.name, spec=spec, task_type=task_type,
            split="train", batch_size=per_part, num_parts=parts, part=part,
        )  # fmt: skip
        batch = next(iter(it), None)
        if batch is not None:
            batches.append(batch)
    images = torch.cat([b.images for b in batches])
    targets = task_type.collate([t for b in batches for t in _uncollate(b.targets, len(b.keys))])
    n = len(images)
    if n < 4:
        raise ValueError(f"`finetune.task`={spec.name!r}: {n} training samples, too few to choose")
    order = np.random.default_rng(ft.seed).permutation(n)
    held = max(1, int(round(n * ft.holdout_fraction)))
    return _chunks(images, targets, order[held:]), _chunks(images, targets, order[:held])


def _uncollate(targets: Any, n: int) -> list[Any]:
    """Per-sample targets from a collated batch (tensors split on dim 0, lists by item)."""
    if isinstance(targets, torch.Tensor):
        return list(targets)
    if isinstance(targets, dict):
        parts = {k: _uncollate(v, n) for k, v in targets.items()}
        return [{k: v[i] for k, v in parts.items()} for i in range(n)]
    return list(targets)


def _rows(targets: Any, idx: torch.Tensor) -> Any:
    if isinstance(targets, torch.Tensor):
        return targets[idx]
    if isinstance(targets, dict):
        return {k: _rows(v, idx) for k, v in targets.items()}
    return [targets[i] for i in idx.tolist()]


def _chunks(images: torch.Tensor, targets: Any, order: np.ndarray) -> list[tuple[Any, Any]]:
    idx = torch.as_tensor(np.sort(order))
    return [
        (images[idx[i : i + SELECTION_BATCH]], _rows(targets, idx[i : i + SELECTION_BATCH]))
        for i in range(0, len(idx), SELECTION_BATCH)
    ]


def _loss(model: GppfModel, spec: TaskSpec, outputs: Any, targets: Any) -> torch.Tensor:
    groups = torch.zeros(len(next(iter(_tensors(outputs)))), dtype=torch.long)
    return get_task_type(spec.type).loss(outputs, targets, groups).float().mean()


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _tensors(v)]
    return [t for v in obj for t in _tensors(v)]


def _fresh_head(model: GppfModel, spec: TaskSpec, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    backbone = model.backbone
    return get_task_type(spec.type).build_head(
        list(backbone.out_channels), list(backbone.strides), spec
    )


def _probe_score(
    model: GppfModel, spec: TaskSpec, fit: list, held: list, ft: FinetuneSection
) -> float:
    """Held-out loss of a fresh head trained on the route's frozen features."""
    with torch.no_grad():
        fit_feats = [(model.features(spec.name, x), y) for x, y in fit]
        held_feats = [(model.features(spec.name, x), y) for x, y in held]
    head = _fresh_head(model, spec, ft.seed)
    optimizer = torch.optim.Adam(head.parameters(), lr=HEAD_LR)
    for step in range(ft.route_steps):
        feats, targets = fit_feats[step % len(fit_feats)]
        optimizer.zero_grad()
        _loss(model, spec, head(feats), targets).backward()
        optimizer.step()
    with torch.no_grad():
        total = sum(float(_loss(model, spec, head(f), y)) * len(f[-1]) for f, y in held_feats)
    return total / sum(len(f[-1]) for f, _ in held_feats)


def _learn(model: GppfModel, spec: TaskSpec, fit: list, ft: FinetuneSection) -> ChosenRoute:
    """Gate logits and a head trained on the frozen backbone; the learned top-k is the route."""
    router = model.router
    for p in model.parameters():
        p.requires_grad_(False)
    logits = router.logits[spec.name]
    logits.requires_grad_(True)
    head = model.heads[spec.name]
    for p in head.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(
        [{"params": [logits], "lr": GATE_LR}, {"params": list(head.parameters()), "lr": HEAD_LR}]
    )
    model.train()
    for step in range(ft.route_steps):
        model.set_step(step)
        images, targets = fit[step % len(fit)]
        optimizer.zero_grad()
        _loss(model, spec, model(spec.name, images), targets).backward()
        optimizer.step()
    model.eval()
    row = logits.detach()
    legos = row.topk(router.top_k, dim=-1).indices.sort(dim=-1).values.tolist()
    return ChosenRoute(legos, row.tolist(), "learn")


def choose_route(
    ft: FinetuneSection, model_cfg: Any, spec: TaskSpec, root: Path, manifest: Manifest
) -> ChosenRoute:
    """The route of `spec`'s task for `ft.route` (see the module docstring)."""
    pretrained = None if ft.pretrained == "none" else Path(ft.pretrained)
    torch.manual_seed(ft.seed)
    model = build_model(model_cfg, {spec.name: spec})
    if pretrained is not None:
        load_backbone(model, pretrained)
    model.eval()
    layers, n, k = model.router.num_layers, model.router.num_legos, model.router.top_k
    if ft.route == "all":
        return _uniform(model, [list(range(n)) for _ in range(layers)], "all")
    if ft.route == "random":
        rng = np.random.default_rng(ft.seed)
        legos = [
            sorted(int(i) for i in rng.choice(n, size=k, replace=False)) for _ in range(layers)
        ]
        return _uniform(model, legos, "random")
    if pretrained is None:
        raise ValueError(
            f"`finetune.route`={ft.route!r} needs a pre-trained export "
            "(`finetune.pretrained`=none has no routes): use learn, random or all"
        )
    if ft.route.startswith("inherit:"):
        legos, logits = _export_route(pretrained, ft.route.split(":", 1)[1])
        return ChosenRoute(legos, logits, ft.route)
    fit, held = _selection_data(root, manifest, spec, ft)
    if ft.route == "learn":
        return _learn(model, spec, fit, ft)
    scores = {}
    best: tuple[float, str] | None = None
    for task in sorted(read_config(pretrained).get("routes", {})):
        legos, logits = _export_route(pretrained, task)
        model.router.fix_route(spec.name, legos, torch.tensor(logits))
        scores[task] = _probe_score(model, spec, fit, held, ft)
        if best is None or scores[task] < best[0]:
            best = (scores[task], task)
    if best is None:
        raise ValueError(f"`finetune.pretrained`={str(pretrained)!r} records no routes")
    legos, logits = _export_route(pretrained, best[1])
    return ChosenRoute(legos, logits, f"auto:{best[1]}", scores)
