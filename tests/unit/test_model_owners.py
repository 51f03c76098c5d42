"""The owner map: every parameter of a GPPF model has exactly one owner, and the set of
parameters a step produces follows from the owners alone."""

from __future__ import annotations

import ast
from pathlib import Path

import torch
import yaml

from gppf_dist.config.model import model_config_from_dict
from gppf_dist.model.build import build_model
from gppf_dist.model.lego import LegoLayer
from gppf_dist.model.owners import SHARED, OwnerMap, lego_owner, task_owner
from gppf_dist.tasks.demo import demo_specs

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf" / "model"


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = model_config_from_dict(yaml.safe_load((CONF / "gppf_vit_tiny.yaml").read_text()))
    return build_model(cfg, demo_specs())


def test_gppf_owners_cover_heads_router_rows_and_every_lego() -> None:
    model = _model()
    owners = model.param_owners()
    names = [n for n, _ in model.named_parameters()]
    assert list(owners) == names
    layers = [m for m in model.backbone.modules() if isinstance(m, LegoLayer)]
    legos = {o.lego for o in owners.values() if o.is_lego}
    assert legos == {(li, i) for li, layer in enumerate(layers) for i in range(len(layer.legos))}
    for name in names:
        owner = owners[name]
        if name.startswith("heads."):
            assert owner == task_owner(name.split(".")[1]), name
        elif name.startswith("router.logits."):
            assert owner == task_owner(name.split(".")[2]), name
        elif ".legos." in name:
            assert owner.is_lego and owners.lego(name) == owner.lego, name
            layer, i = owner.lego  # type: ignore[misc]
            assert dict(layers[layer].legos[i].named_parameters()), name
        else:
            assert owner.is_shared, name
    assert owners.of("not.a.parameter") == SHARED


def test_produced_parameters_follow_present_tasks_and_their_legos() -> None:
    owners = OwnerMap(
        {
            "stem.w": SHARED,
            "heads.a.w": task_owner("a"),
            "heads.b.w": task_owner("b"),
            "l0.legos.0.w": lego_owner(0, 0),
            "l0.legos.1.w": lego_owner(0, 1),
            "l1.legos.0.w": lego_owner(1, 0),
        }
    )
    produced = owners.produced({"a"}, {"a": {(0, 1)}, "b": {(1, 0)}})
    assert produced == {"stem.w", "heads.a.w", "l0.legos.1.w"}
    assert owners.produced(set(), {}) == {"stem.w"}
    assert owners.task("heads.b.w") == "b" and owners.task("l1.legos.0.w") is None


def test_only_the_owner_map_spells_owners() -> None:
    """No other module builds or parses owner strings."""
    src = ROOT / "src" / "gppf_dist"
    bad = []
    for path in src.rglob("*.py"):
        if path.name == "owners.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            text = node.value if isinstance(node, ast.Constant) else None
            if isinstance(node, ast.JoinedStr) and node.values:
                head = node.values[0]
                text = head.value if isinstance(head, ast.Constant) else None
            if isinstance(text, str) and text.startswith(("lego:", "task:")):
                bad.append(f"{path.relative_to(src)}: {ast.unparse(node)}")
    assert not bad, bad
