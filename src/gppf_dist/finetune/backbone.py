"""A fine-tuning run's model: the export's backbone, the chosen route fixed, the tune mode's
parameters trainable and nothing else.

Every rank does the same here from the same files (`finetune.pretrained`'s safetensors, the
route `gppf-finetune` chose and wrote into the run's config), so the model every rank starts
from is identical and SIMT's exactness (same losses at any world size, exact resume) holds as
in pre-training. Trainable sets (`finetune.tune`):

- `linear`: the task's head;
- `router`: the head and the task's gate logits (the selection stays fixed);
- `path`: the head, the route's legos and the shared backbone layers; every lego off the route
  keeps `requires_grad=False`, so it stays bit-identical to the export (the optimizer never sees
  it) and the pre-training tasks that use it are unaffected;
- `full`: every parameter.

`frozen_layers` then freezes the stem and the first k lego layers whatever the mode; layer-wise
learning-rate decay (`layer_decay`) is applied by the optimizer (`engine/assemble.py`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from gppf_dist.config.finetune import FinetuneSection
from gppf_dist.model.build import GppfModel
from gppf_dist.model.depth import depth_of, num_layers
from gppf_dist.model.owners import OwnerMap
from gppf_dist.model.pretrained import WEIGHTS_NAME


def load_backbone(model: GppfModel, export_dir: Path) -> int:
    """Copy every backbone tensor of the export into `model`; returns how many. Raises naming
    the first tensor the export lacks or holds in another shape."""
    path = Path(export_dir) / WEIGHTS_NAME
    if not path.is_file():
        raise ValueError(f"`finetune.pretrained`={str(export_dir)!r} has no {WEIGHTS_NAME}")
    state = model.state_dict()
    wanted = [k for k in state if k.startswith("backbone.")]
    with safe_open(str(path), framework="pt") as f:
        held = set(f.keys())
        missing = [k for k in wanted if k not in held]
        if missing:
            raise ValueError(
                f"{path}: {len(missing)} backbone tensors missing, e.g. {missing[:3]}: an export "
                "of another architecture?"
            )
        loaded = {k: f.get_tensor(k) for k in wanted}
    for key, value in loaded.items():
        if value.shape != state[key].shape:
            raise ValueError(
                f"{path}: {key!r} has shape {tuple(value.shape)}, the model "
                f"{tuple(state[key].shape)}"
            )
    model.load_state_dict(loaded, strict=False)
    return len(loaded)


def trainable(owners: OwnerMap, name: str, tune: str, route: set[tuple[int, int]]) -> bool:
    owner = owners.of(name)
    if tune == "full":
        return True
    if tune == "path" and (owner.is_shared or (owner.lego is not None and owner.lego in route)):
        return True
    if owner.task is None:
        return False
    return tune == "router" or name.startswith("heads.")  # the gate logits: `router` only


def prepare_model(model: GppfModel, ft: FinetuneSection) -> None:
    """Load the export's backbone (unless `none`), fix the chosen route, freeze per `tune`."""
    if not ft.chosen_legos:
        raise ValueError("`finetune.chosen_legos` is empty: start fine-tuning with gppf-finetune")
    if ft.pretrained != "none":
        load_backbone(model, Path(ft.pretrained))
    logits = torch.tensor(ft.chosen_logits, dtype=torch.float32)
    model.router.fix_route(ft.task, ft.chosen_legos, logits)
    route = {(layer, int(i)) for layer, ids in enumerate(ft.chosen_legos) for i in ids}
    owners = model.param_owners()
    if ft.frozen_layers > num_layers(model.cfg):
        raise ValueError(
            f"`finetune.frozen_layers`={ft.frozen_layers} exceeds the model's "
            f"{num_layers(model.cfg)} lego layers"
        )
    for name, param in model.named_parameters():
        frozen = depth_of(name, model.cfg) <= ft.frozen_layers
        param.requires_grad_(not frozen and trainable(owners, name, ft.tune, route))
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f"`finetune.tune`={ft.tune!r} leaves nothing to train")
