"""Activation checkpointing of lego layers: same losses and gradients, fewer kept activations."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from gppf_dist.config.model import model_config_from_dict
from gppf_dist.model.build import GppfModel, build_model
from gppf_dist.model.lego import LegoLayer, mixture, set_activation_checkpointing
from gppf_dist.model.resnet import BottleneckLego
from gppf_dist.model.vit import MLPLego
from gppf_dist.tasks.demo import demo_specs, synthetic_batch
from gppf_dist.tasks.registry import get_task_type

CONF = Path(__file__).parents[2] / "conf" / "model"
FAMILIES = ["gppf_r50_tiny", "gppf_vit_tiny"]


def tiny_model(preset: str) -> GppfModel:
    torch.manual_seed(0)
    cfg = model_config_from_dict(yaml.safe_load((CONF / f"{preset}.yaml").read_text()))
    model = build_model(cfg, demo_specs())
    return model.train()


def task_loss(model: GppfModel, task: str, images: torch.Tensor, targets: object) -> torch.Tensor:
    groups = torch.zeros(len(images), dtype=torch.long)
    return get_task_type(model.specs[task].type).loss(model(task, images), targets, groups)


def losses_and_grads(
    model: GppfModel, batches: dict[str, tuple[torch.Tensor, object]]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    losses = {}
    for task, (images, targets) in batches.items():
        loss = task_loss(model, task, images, targets)
        loss.sum().backward()
        losses[task] = loss.detach()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return losses, grads


def test_set_activation_checkpointing_counts_lego_layers() -> None:
    model = tiny_model("gppf_vit_tiny")
    layers = [m for m in model.modules() if isinstance(m, LegoLayer)]
    assert set_activation_checkpointing(model, True) == len(layers) == model.cfg.depth
    assert all(layer.checkpointed for layer in layers)
    assert set_activation_checkpointing(model, False) == len(layers)
    assert not any(layer.checkpointed for layer in layers)
    assert set_activation_checkpointing(nn.Linear(2, 2), True) == 0


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "loop"])
@pytest.mark.parametrize("preset", FAMILIES)
def test_losses_and_gradients_unchanged(preset: str, fused: bool) -> None:
    model = tiny_model(preset)
    for m in model.modules():
        if isinstance(m, LegoLayer):
            m.fused = fused
    gen = torch.Generator().manual_seed(0)
    batches = {task: synthetic_batch(model.specs[task], 2, gen) for task in ("cls_object", "det")}
    assert set_activation_checkpointing(model, False) > 0
    losses, grads = losses_and_grads(model, batches)
    set_activation_checkpointing(model, True)
    ck_losses, ck_grads = losses_and_grads(model, batches)
    assert losses.keys() == ck_losses.keys() and grads.keys() == ck_grads.keys()
    assert any(".legos." in name for name in grads)
    assert any(name.startswith("router.") for name in grads)  # through the gates
    for task in losses:
        assert torch.equal(losses[task], ck_losses[task]), task
    for name in grads:
        assert torch.equal(grads[name], ck_grads[name]), name


@pytest.mark.parametrize(
    ("make", "shape"),
    [(lambda: BottleneckLego(16, 4, 8), (3, 16, 5, 7)), (lambda: MLPLego(16, 12), (3, 9, 16))],
    ids=["bottleneck", "mlp"],
)
def test_mixture_checkpointed_matches_plain(make, shape) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    legos = [make() for _ in range(2)]
    params = [p for lego in legos for p in lego.parameters()]
    x = torch.randn(shape, requires_grad=True)
    gates = torch.softmax(torch.randn(2), 0).requires_grad_()
    results = []
    for checkpointed in (False, True):
        out = mixture(legos, x, gates, fused=True, checkpointed=checkpointed)
        results.append((out, torch.autograd.grad(out.square().sum(), [x, gates, *params])))
    (plain, plain_grads), (ck, ck_grads) = results
    assert torch.equal(plain, ck)
    for a, b in zip(plain_grads, ck_grads, strict=True):
        assert torch.equal(a, b)
    with torch.no_grad():  # no graph, nothing to checkpoint: still the same values
        assert torch.equal(mixture(legos, x, gates, checkpointed=True), plain)


def kept_bytes(model: GppfModel, task: str, images: torch.Tensor) -> int:
    """Bytes of distinct storages kept for backward by the backbone (parameters excluded).

    Counted: every tensor autograd saves (`saved_tensors_hooks`), plus each lego layer's input,
    which a checkpoint keeps itself (it is then out of the hooks' sight).
    """
    kept: dict[int, int] = {}

    def keep(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        kept[storage.data_ptr()] = storage.nbytes()
        return t

    def keep_input(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        keep(args[0])

    hooks = [
        m.register_forward_pre_hook(keep_input) for m in model.modules() if isinstance(m, LegoLayer)
    ]
    try:
        with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            feats = model.features(task, images)
            total = sum(f.square().sum() for f in feats if f is not None)
    finally:
        for h in hooks:
            h.remove()
    total.backward()  # the graph was complete
    model.zero_grad(set_to_none=True)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(n for ptr, n in kept.items() if ptr not in params)


@pytest.mark.parametrize("preset", FAMILIES)
def test_checkpointing_keeps_fewer_activations(preset: str) -> None:
    model = tiny_model(preset)
    images, _ = synthetic_batch(model.specs["det"], 2, torch.Generator().manual_seed(0))
    set_activation_checkpointing(model, False)
    plain = kept_bytes(model, "det", images)
    set_activation_checkpointing(model, True)
    checkpointed = kept_bytes(model, "det", images)
    assert checkpointed < 0.6 * plain, (checkpointed, plain)  # measured: 0.47 for both


def test_checkpointing_only_in_training() -> None:
    """In eval mode (e.g. an evaluation with gradients on) the layers run plainly."""
    model = tiny_model("gppf_r50_tiny")
    set_activation_checkpointing(model, True)
    images, _ = synthetic_batch(model.specs["det"], 1, torch.Generator().manual_seed(0))
    model.eval()
    evaluated = kept_bytes(model, "det", images)
    set_activation_checkpointing(model, False)
    assert kept_bytes(model, "det", images) == evaluated
