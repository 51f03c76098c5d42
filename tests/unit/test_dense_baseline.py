"""The dense baselines run every lego always, at the activated compute of the tiny GPPF models."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from gppf_dist.config.schema import RunConfig
from gppf_dist.model.build import build_model
from gppf_dist.model.summary import active_params, count_gmacs, probe_input, sample_input
from gppf_dist.tasks.demo import demo_specs

TOLERANCE = 0.05


def _per_task(cfg: RunConfig) -> dict[str, tuple[int, float]]:
    """(active parameters, MACs) of each demo task, unrounded."""
    specs = demo_specs()
    torch.manual_seed(0)
    model = build_model(cfg.model, specs).eval()
    return {
        name: (
            active_params(model, name, probe_input(spec)),
            count_gmacs(model, name, sample_input(spec)),
        )
        for name, spec in specs.items()
    }


@pytest.mark.parametrize(
    ("sparse", "dense"),
    [("gppf_r50_tiny", "gppf_r50_tiny_dense"), ("gppf_vit_tiny", "gppf_vit_tiny_dense")],
)
def test_dense_matches_activated_compute(
    compose_run: Callable[..., RunConfig], sparse: str, dense: str
) -> None:
    sparse_cfg, dense_cfg = compose_run(f"model={sparse}"), compose_run(f"model={dense}")
    assert dense_cfg.model.name == dense and dense_cfg.model.family == sparse_cfg.model.family
    assert dense_cfg.model.num_legos == dense_cfg.model.top_k
    assert sparse_cfg.model.num_legos > sparse_cfg.model.top_k  # the sparse one really routes
    ours, theirs = _per_task(dense_cfg), _per_task(sparse_cfg)
    assert ours.keys() == theirs.keys() and len(ours) == 8
    for task in ours:
        (params, macs), (ref_params, ref_macs) = ours[task], theirs[task]
        assert abs(params / ref_params - 1) <= TOLERANCE, (task, params, ref_params)
        assert abs(macs / ref_macs - 1) <= TOLERANCE, (task, macs, ref_macs)


def test_dense_holds_fewer_parameters_in_all(compose_run: Callable[..., RunConfig]) -> None:
    """Same activated compute, but no idle legos: the sparse model's extra capacity is the point."""
    specs = demo_specs()
    totals = {
        name: sum(
            p.numel() for p in build_model(compose_run(f"model={name}").model, specs).parameters()
        )
        for name in ("gppf_r50_tiny", "gppf_r50_tiny_dense")
    }
    assert totals["gppf_r50_tiny_dense"] < 0.85 * totals["gppf_r50_tiny"]
