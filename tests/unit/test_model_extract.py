"""Sub-network extraction: the dense net of a task equals the routed model on that task."""

from __future__ import annotations

import pytest
import torch

from gppf_dist.config.model import ModelConfig
from gppf_dist.model.build import build_model
from gppf_dist.model.extract import extract_task, tensors_only
from gppf_dist.model.summary import active_params, probe_input, sample_input, tensor_leaves
from gppf_dist.tasks.demo import demo_specs

SPECS = demo_specs()


@pytest.mark.parametrize("family", ["resnet", "vit"])
def test_dense_task_net_matches_routed_model(family: str) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(family=family), SPECS).eval()
    with torch.no_grad():  # non-uniform gates, so folding them matters
        for logits in model.router.logits.values():
            logits.normal_(0, 2.0)
    for task in ("det", "pose", "reid"):
        spec = SPECS[task]
        x = sample_input(spec, batch=2)
        dense = extract_task(model, task, spec.input_size)
        with torch.no_grad():
            want, got = tensors_only(model(task, x)), dense(x)
        pairs = list(zip(tensor_leaves(want), tensor_leaves(got), strict=True))
        assert pairs
        for a, b in pairs:
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), (family, task)
        # only the selected legos and this task's head remain; the router is gone
        n_dense = sum(p.numel() for p in dense.parameters())
        n_router_row = model.router.logits[task].numel()
        assert n_dense == active_params(model, task, probe_input(spec)) - n_router_row
        assert not any("router" in name for name, _ in dense.named_parameters())


def test_extract_needs_a_known_task() -> None:
    model = build_model(ModelConfig(), {"det": SPECS["det"]})
    with pytest.raises(ValueError, match="`task`='seg'"):
        extract_task(model, "seg", (64, 64))
    assert model.training  # left as it was


def test_tensors_only_drops_constants() -> None:
    out = tensors_only({"a": torch.ones(1), "hw": (64, 48), "b": [torch.zeros(2), 3]})
    assert set(out) == {"a", "b"} and len(out["b"]) == 1
