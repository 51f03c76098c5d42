"""How deep a parameter sits: 0 for the stem (patch embedding), i + 1 for lego layer i (with its
block's other parameters), `num_layers + 1` for what follows the last lego layer (final norm,
feature pyramid, heads, router). Used by fine-tuning's layer-wise learning-rate decay and frozen
layers (`finetune/backbone.py`, `engine/optim.py`)."""

from __future__ import annotations

from itertools import accumulate

from gppf_dist.config.model import ModelConfig


def depth_of(name: str, cfg: ModelConfig) -> int:
    """Depth of parameter `name` (a `GppfModel` parameter name) in a model of `cfg`."""
    top = num_layers(cfg) + 1
    parts = name.split(".")
    if parts[0] != "backbone" or len(parts) < 2:
        return top
    kind = parts[1]
    if kind in ("stem", "patch_embed", "pos_embed", "cls_token"):
        return 0
    if kind in ("layers", "blocks"):
        return int(parts[2]) + 1
    if kind == "projections":  # the projection into stage s runs before its first lego layer
        firsts = [0, *accumulate(cfg.blocks)]
        return firsts[int(parts[2])] + 1
    return top


def num_layers(cfg: ModelConfig) -> int:
    return sum(cfg.blocks) if cfg.family == "resnet" else cfg.depth
