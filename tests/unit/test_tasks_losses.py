"""Per-sample losses: shape [B], split invariance (groups respected); every head overfits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from gppf_dist.config.model import model_config_from_dict
from gppf_dist.model.build import GppfModel, build_model
from gppf_dist.tasks.demo import demo_specs, synthetic_batch
from gppf_dist.tasks.registry import get_task_type

CONF = Path(__file__).parents[2] / "conf" / "model"
SPECS = demo_specs()


def tiny_model(names: list[str], seed: int = 0) -> GppfModel:
    torch.manual_seed(seed)
    cfg = model_config_from_dict(yaml.safe_load((CONF / "gppf_r50_tiny.yaml").read_text()))
    return build_model(cfg, {n: SPECS[n] for n in names})


def take(obj: Any, idx: slice, batch: int) -> Any:
    """Rows `idx` of every batch-sized tensor in a nested output/target structure."""
    if isinstance(obj, torch.Tensor):
        return obj[idx] if obj.dim() and obj.shape[0] == batch else obj
    if isinstance(obj, dict):
        return {k: take(v, idx, batch) for k, v in obj.items()}
    return obj


@pytest.fixture(scope="module")
def model() -> GppfModel:
    return tiny_model(list(SPECS))


@pytest.mark.parametrize("name", list(SPECS))
def test_loss_of_batch_equals_losses_of_its_halves(model: GppfModel, name: str) -> None:
    spec, task = SPECS[name], get_task_type(SPECS[name].type)
    gen = torch.Generator().manual_seed(3)
    images, targets = synthetic_batch(spec, 8, gen)
    if spec.type in ("reid", "face"):
        targets["identity"] = torch.tensor([0, 0, 1, 1, 2, 2, 0, 3])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    with torch.no_grad():
        whole = task.loss(model(name, images), targets, groups)
        halves = []
        for idx in (slice(0, 4), slice(4, 8)):
            out = model(name, images[idx])
            halves.append(task.loss(out, take(targets, idx, 8), groups[idx]))
    assert whole.shape == (8,)
    torch.testing.assert_close(whole, torch.cat(halves), rtol=1e-4, atol=1e-5)


def test_reid_triplet_couples_only_within_groups(model: GppfModel) -> None:
    task = get_task_type("reid")
    images, targets = synthetic_batch(SPECS["reid"], 4, torch.Generator().manual_seed(0))
    targets["identity"] = torch.tensor([0, 1, 0, 1])
    with torch.no_grad():
        out = model("reid", images)
        apart = task.loss(out, targets, torch.tensor([0, 0, 1, 1]))  # no positive in any group
        together = task.loss(out, targets, torch.tensor([0, 0, 0, 0]))
    ce_only = torch.nn.functional.cross_entropy(
        out["logits"], targets["identity"], reduction="none", label_smoothing=0.1
    )
    torch.testing.assert_close(apart, ce_only)
    assert (together >= apart - 1e-6).all()


OVERFIT_STEPS = 40


@pytest.mark.parametrize("name", ["cls_object", "attr", "det", "seg", "pose", "reid", "face"])
def test_head_overfits_tiny_batch(name: str) -> None:
    spec, task = SPECS[name], get_task_type(SPECS[name].type)
    model = tiny_model([name], seed=1)
    images, targets = synthetic_batch(spec, 4, torch.Generator().manual_seed(5))
    if spec.type in ("reid", "face"):
        targets["identity"] = torch.tensor([0, 0, 1, 1])
    groups = torch.zeros(4, dtype=torch.long)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(OVERFIT_STEPS):
        opt.zero_grad()
        loss = task.loss(model(name, images), targets, groups).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # reid keeps a label-smoothing floor of about 0.1·log(C); others go near 0
    fraction = 0.35 if name == "reid" else 0.2
    assert losses[-1] < fraction * losses[0], (name, losses[0], losses[-1])
    # decoding + metric agree: the memorised batch scores well on its own primary metric
    model.eval()
    metric = task.new_metric(spec)
    with torch.no_grad():
        metric.update(model(name, images), targets)
    value = metric.compute([metric.state()])[task.primary_metric]
    assert task.higher_is_better and value >= 0.75, (name, value)
