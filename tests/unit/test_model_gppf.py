"""GppfModel through the tiny ResNet preset: shapes, sparse gradients, usage, determinism."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from gppf_dist.config.model import ModelConfig, model_config_from_dict
from gppf_dist.model.build import GppfModel, build_model
from gppf_dist.tasks.demo import demo_specs, synthetic_batch
from gppf_dist.tasks.registry import get_task_type, make_spec

CONF = Path(__file__).parents[2] / "conf" / "model"


def tiny_cfg(**router: object) -> ModelConfig:
    values = yaml.safe_load((CONF / "gppf_r50_tiny.yaml").read_text())
    values["router"] = {**values.get("router", {}), **router}
    return model_config_from_dict(values)


@pytest.fixture(scope="module")
def model() -> GppfModel:
    torch.manual_seed(0)
    return build_model(tiny_cfg(), demo_specs())


def test_every_task_forward_and_loss(model: GppfModel) -> None:
    gen = torch.Generator().manual_seed(0)
    for name, spec in model.specs.items():
        images, targets = synthetic_batch(spec, 3, gen)
        out = model(name, images)
        loss = get_task_type(spec.type).loss(out, targets, torch.zeros(3, dtype=torch.long))
        assert loss.shape == (3,), name
        assert torch.isfinite(loss).all(), name


def test_multiscale_features(model: GppfModel) -> None:
    feats = model.features("cls_object", torch.zeros(2, 3, 64, 64, dtype=torch.uint8))
    assert [f.shape[1] for f in feats] == model.backbone.out_channels == [16, 32, 64, 128]
    assert model.backbone.strides == [4, 8, 16, 32]
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 16), (8, 8), (4, 4), (2, 2)]


def test_only_selected_legos_get_gradients(model: GppfModel) -> None:
    model.zero_grad(set_to_none=True)
    images, targets = synthetic_batch(model.specs["attr"], 2, torch.Generator().manual_seed(1))
    out = model("attr", images)
    get_task_type("attributes").loss(out, targets, torch.zeros(2)).sum().backward()
    route = model.router.route("attr")
    owners = model.param_owners()
    params = dict(model.named_parameters())
    for name, owner in owners.items():
        has_grad = params[name].grad is not None
        if owner.lego is not None:
            layer, lego = owner.lego
            assert has_grad == (lego in route.indices[layer]), name
        elif owner.task is not None:
            assert has_grad == (owner.task == "attr"), name
        else:
            assert has_grad, name
    model.zero_grad(set_to_none=True)


def test_regularizer_touches_router_only(model: GppfModel) -> None:
    model.zero_grad(set_to_none=True)
    reg = model.regularizer()
    assert reg.dim() == 0
    reg.backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == name.startswith("router."), name
    model.zero_grad(set_to_none=True)


def test_lego_usage(model: GppfModel) -> None:
    usage = model.lego_usage()
    cfg = model.cfg
    assert usage.shape == (len(model.task_names), cfg.num_layers, cfg.num_legos)
    assert not usage.requires_grad
    assert ((usage > 0).sum(-1) == cfg.top_k).all()
    torch.testing.assert_close(usage.sum(-1), torch.ones(usage.shape[:2]))
    assert model.task_names == list(demo_specs())


def test_images_must_be_uint8(model: GppfModel) -> None:
    with pytest.raises(ValueError, match="images.dtype"):
        model("attr", torch.zeros(1, 3, 64, 32))
    with pytest.raises(ValueError, match="'nope'"):
        model("nope", torch.zeros(1, 3, 64, 32, dtype=torch.uint8))


def test_deterministic_given_seed() -> None:
    specs = {k: v for k, v in demo_specs().items() if k in ("cls_object", "seg")}
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        outs.append(build_model(tiny_cfg(), specs)("seg", images))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def test_outputs_independent_of_batch_split(model: GppfModel) -> None:
    images = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    whole = model("cls_object", images)
    halves = torch.cat([model("cls_object", images[:2]), model("cls_object", images[2:])])
    torch.testing.assert_close(whole, halves, rtol=1e-4, atol=1e-5)


def test_odd_input_sizes() -> None:
    base = demo_specs()
    specs = {
        name: make_spec(name, base[name].type, (50, 38), base[name].label_space)
        for name in ("det", "seg", "pose", "face")
    }
    torch.manual_seed(0)
    model = build_model(tiny_cfg(), specs)
    gen = torch.Generator().manual_seed(0)
    for name, spec in specs.items():
        images, targets = synthetic_batch(spec, 2, gen)
        out = model(name, images)
        loss = get_task_type(spec.type).loss(out, targets, torch.zeros(2))
        assert loss.shape == (2,) and torch.isfinite(loss).all(), name
        if name == "seg":
            assert out.shape[-2:] == (50, 38)
