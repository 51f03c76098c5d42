"""The `finetune` section: transfer a pre-trained GPPF export to a downstream task
(`gppf-finetune`, `finetune/backbone.py`). Empty `task` means a pre-training run."""

from __future__ import annotations

from dataclasses import dataclass, field

from gppf_dist.config.checks import check as _check

ROUTES = ("auto", "learn", "all", "random")
"""Route choices besides `inherit:<pre-training task>`."""
TUNES = ("linear", "router", "path", "full")


@dataclass(kw_only=True)
class FinetuneSection:
    pretrained: str = "none"
    """A `gppf-export` folder, or `none`: the same architecture (`model=`) from scratch."""
    task: str = ""
    """The downstream task: a task name in `data.root`'s manifest (empty: not fine-tuning)."""
    route: str = "auto"
    """Its legos: `inherit:<pre-training task>` (that task's route), `auto` (score every
    pre-training route on a held-out part of the training data, take the best), `learn` (a new
    gate over the lego pool, trained `route_steps` steps on frozen features, then fixed), `all`
    (every lego: more compute) or `random` (k legos per layer, seeded: an ablation)."""
    tune: str = "path"
    """What trains: `linear` (head), `router` (head + gates), `path` (head + the route's legos +
    the shared layers; every other lego stays bit-identical to the export) or `full`."""
    layer_decay: float = 1.0
    """Layer-wise learning-rate decay: parameters at depth d (0 the stem, i + 1 lego layer i,
    L + 1 the head; `model/depth.py`) train at lr × layer_decay^(L + 1 - d); 1: none."""
    frozen_layers: int = -1
    """Freeze the stem (0) and the first k lego layers (k), whatever `tune` says; -1: none."""
    route_steps: int = 30
    """Steps of head (and, for `learn`, gate) training per candidate route when choosing one."""
    holdout_fraction: float = 0.25
    """Part of the training split that scores the candidate routes (`auto`)."""
    selection_samples: int = 256
    """At most this many training samples are used to choose a route."""
    shots: int = 0
    """Few-shot: train on this many samples per class (classification; seeded); 0: all."""
    train_fraction: float = 1.0
    """Train on this fraction of the training split (seeded); 1: all."""
    batch_size: int = 32
    """Global batch of the downstream task."""
    input_size: list[int] = field(default_factory=list)
    """[h, w]; empty: the export's input size for a task of the same type, else [224, 224]."""
    seed: int = 0
    """Seed of the route choice (`random`, the held-out split, the candidate heads)."""
    chosen_legos: list[list[int]] = field(default_factory=list)
    """Set by gppf-finetune (leave empty): the route chosen, [lego layer][k] lego ids."""
    chosen_logits: list[list[float]] = field(default_factory=list)
    """Set by gppf-finetune: the task's gate logits, [lego layer][lego]."""
    chosen_from: str = ""
    """Set by gppf-finetune: where the route came from (e.g. `inherit:cls_object`)."""

    @property
    def enabled(self) -> bool:
        return bool(self.task)

    def __post_init__(self) -> None:
        ok_route = self.route in ROUTES or (
            self.route.startswith("inherit:") and len(self.route) > len("inherit:")
        )
        _check(ok_route, "finetune.route", self.route, f"inherit:<task> or one of {list(ROUTES)}")
        _check(self.tune in TUNES, "finetune.tune", self.tune, f"one of {list(TUNES)}")
        _check(self.route_steps >= 1, "finetune.route_steps", self.route_steps, "must be >= 1")
        _check(0 < self.layer_decay <= 1, "finetune.layer_decay", self.layer_decay, "in (0, 1]")
        _check(self.frozen_layers >= -1, "finetune.frozen_layers", self.frozen_layers, ">= -1")
        _check(
            0 < self.holdout_fraction < 1,
            "finetune.holdout_fraction",
            self.holdout_fraction,
            "must be in (0, 1)",
        )
        _check(
            self.selection_samples >= 8,
            "finetune.selection_samples",
            self.selection_samples,
            "must be >= 8",
        )
        _check(self.batch_size >= 1, "finetune.batch_size", self.batch_size, "must be >= 1")
        _check(self.shots >= 0, "finetune.shots", self.shots, "must be >= 0")
        _check(
            0 < self.train_fraction <= 1,
            "finetune.train_fraction",
            self.train_fraction,
            "must be in (0, 1]",
        )
        _check(
            not self.input_size or (len(self.input_size) == 2 and min(self.input_size) >= 16),
            "finetune.input_size",
            list(self.input_size),
            "must be empty or [h, w], each >= 16",
        )
