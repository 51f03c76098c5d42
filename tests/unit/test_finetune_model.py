"""The fine-tuning model (`finetune/backbone.py`): which parameters each tune mode trains,
counted (a "frozen" module attribute that freezes nothing would pass a looser check), and the
chosen route fixed."""

from __future__ import annotations

import pytest
import torch

from gppf_dist.config.finetune import FinetuneSection
from gppf_dist.config.model import ModelConfig
from gppf_dist.finetune.backbone import prepare_model
from gppf_dist.model.build import build_model
from tests.fake_task import fake_spec

ROUTE = [[0, 3], [1, 2], [0, 1], [2, 3]]


def _model(tune: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(ModelConfig(), {"new": fake_spec("new")})
    logits = [[0.5, 0.0, 0.0, 0.25]] * 4
    ft = FinetuneSection(task="new", tune=tune, chosen_legos=ROUTE, chosen_logits=logits)
    prepare_model(model, ft)
    return model


def _count(model: torch.nn.Module, keep) -> int:  # noqa: ANN001
    return sum(p.numel() for n, p in model.named_parameters() if keep(n))


@pytest.mark.parametrize("tune", ["linear", "router", "path", "full"])
def test_each_tune_mode_trains_exactly_its_parameters(tune: str) -> None:
    model = _model(tune)
    owners = model.param_owners()
    on_route = {(layer, i) for layer, ids in enumerate(ROUTE) for i in ids}

    def expected(name: str) -> bool:
        owner = owners.of(name)
        head = name.startswith("heads.")
        return {
            "linear": head,
            "router": owner.task is not None,
            "path": head or owner.is_shared or owner.lego in on_route,
            "full": True,
        }[tune]

    trainable = _count(model, lambda n: model.get_parameter(n).requires_grad)
    assert trainable == _count(model, expected) > 0
    if tune != "full":
        assert trainable < _count(model, lambda n: True)
    lego_of = owners.lego
    off_route = _count(model, lambda n: lego_of(n) is not None and lego_of(n) not in on_route)
    frozen = _count(model, lambda n: not model.get_parameter(n).requires_grad)
    assert frozen >= (off_route if tune != "full" else 0)


def test_the_route_is_fixed() -> None:
    model = _model("path")
    model.train()
    for step in range(3):
        model.set_step(step)
        assert model.router.route("new").indices == ROUTE


def test_a_route_of_the_wrong_shape_names_the_task() -> None:
    model = build_model(ModelConfig(), {"new": fake_spec("new")})
    ft = FinetuneSection(task="new", chosen_legos=[[0]] * 4, chosen_logits=[[0.0] * 4] * 4)
    with pytest.raises(ValueError, match="route of 'new' must have 2 legos"):
        prepare_model(model, ft)


def test_frozen_layers_freeze_the_stem_and_the_first_lego_layers() -> None:
    from gppf_dist.model.depth import depth_of

    torch.manual_seed(0)
    cfg = ModelConfig()
    model = build_model(cfg, {"new": fake_spec("new")})
    logits = [[0.0] * 4] * 4
    ft = FinetuneSection(
        task="new", tune="full", frozen_layers=2, chosen_legos=ROUTE, chosen_logits=logits
    )
    prepare_model(model, ft)
    for name, param in model.named_parameters():
        assert param.requires_grad == (depth_of(name, cfg) > 2), name
    assert not model.get_parameter("backbone.stem.0.0.weight").requires_grad
    assert not model.get_parameter("backbone.layers.1.legos.0.conv1.weight").requires_grad
    assert model.get_parameter("backbone.layers.2.legos.0.conv1.weight").requires_grad


def test_layer_decay_scales_each_depth_s_learning_rate(compose_run) -> None:  # noqa: ANN001
    from gppf_dist.engine.assemble import default_optimizers

    cfg = compose_run("finetune.task=new", "finetune.layer_decay=0.5", "trainer.lr=1.0")
    cfg.simt.tasks = {}
    model = build_model(cfg.model, {"new": fake_spec("new")})
    optimizer, _ = default_optimizers(cfg, model.param_owners())(model, None)
    lr_of = {id(p): g["initial_lr"] for g in optimizer.param_groups for p in g["params"]}
    get = model.get_parameter
    assert lr_of[id(get("backbone.stem.0.0.weight"))] == 0.5**5  # depth 0 of L + 1 = 5
    assert lr_of[id(get("backbone.layers.0.legos.0.conv1.weight"))] == 0.5**4
    assert lr_of[id(get("backbone.layers.3.legos.0.conv1.weight"))] == 0.5**1
    assert lr_of[id(get("heads.new.fc.weight"))] == 1.0
