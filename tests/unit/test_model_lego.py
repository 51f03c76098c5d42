"""Lego layers: the fused mixture equals the plain loop; the ViT family end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from gppf_dist.config.model import model_config_from_dict
from gppf_dist.model.build import build_model
from gppf_dist.model.lego import LegoLayer
from gppf_dist.model.resnet import BottleneckLego
from gppf_dist.model.vit import MLPLego
from gppf_dist.tasks.demo import demo_specs, synthetic_batch
from gppf_dist.tasks.registry import get_task_type

CONF = Path(__file__).parents[2] / "conf" / "model"


@pytest.mark.parametrize(
    ("make", "shape"),
    [
        (lambda: BottleneckLego(16, 4, 8), (3, 16, 5, 7)),
        (lambda: MLPLego(16, 12), (3, 9, 16)),
    ],
    ids=["bottleneck", "mlp"],
)
@pytest.mark.parametrize("indices", [[2], [3, 0], [1, 2, 3]])
def test_fused_mixture_matches_loop(make, shape, indices: list[int]) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    layer = LegoLayer(4, make)
    for p in layer.parameters():  # non-trivial norm affines too
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(shape)
    gates = torch.softmax(torch.randn(len(indices)), 0).requires_grad_()
    layer.fused = True
    fused = layer(x, indices, gates)
    grads_fused = torch.autograd.grad(
        fused.square().sum(), [gates, *layer.parameters()], allow_unused=True
    )
    layer.fused = False
    loop = layer(x, indices, gates)
    grads_loop = torch.autograd.grad(
        loop.square().sum(), [gates, *layer.parameters()], allow_unused=True
    )
    torch.testing.assert_close(fused, loop, rtol=1e-4, atol=1e-5)
    for a, b in zip(grads_fused, grads_loop, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_vit_tiny_every_task_and_sparse_gradients() -> None:
    torch.manual_seed(0)
    cfg = model_config_from_dict(yaml.safe_load((CONF / "gppf_vit_tiny.yaml").read_text()))
    model = build_model(cfg, demo_specs())
    assert model.backbone.strides == [4, 8, 16, 32]
    gen = torch.Generator().manual_seed(0)
    for name, spec in model.specs.items():
        images, targets = synthetic_batch(spec, 2, gen)
        loss = get_task_type(spec.type).loss(model(name, images), targets, torch.zeros(2))
        assert loss.shape == (2,) and torch.isfinite(loss).all(), name
    model.zero_grad(set_to_none=True)
    images, targets = synthetic_batch(model.specs["reid"], 2, gen)
    get_task_type("reid").loss(model("reid", images), targets, torch.zeros(2)).sum().backward()
    route = model.router.route("reid")
    params = dict(model.named_parameters())
    owners = model.param_owners()
    assert sum(o.is_lego for o in owners.values()) == cfg.depth * cfg.num_legos * 4
    for name, owner in owners.items():
        if owner.lego is not None:
            layer, lego = owner.lego
            assert (params[name].grad is not None) == (lego in route.indices[layer])
    assert model.lego_usage().shape == (8, cfg.depth, cfg.num_legos)
