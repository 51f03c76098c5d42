"""Evaluation on real gloo processes (engine/evaluate.py): metric states are merged once, on
rank 0, and every rank gets the same results; the same as one process evaluating everything.
A metric that fails on rank 0 makes every rank raise, naming the task (no rank left waiting)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from .harness import run_distributed

CONF = Path(__file__).resolve().parents[2] / "conf" / "model" / "gppf_r50_tiny.yaml"


def _evaluate(root: str, fail: bool) -> Any:
    import torch.distributed as dist
    import yaml

    from gppf_dist.config.model import model_config_from_dict
    from gppf_dist.data.format.manifest import load_manifest
    from gppf_dist.engine.evaluate import evaluate
    from gppf_dist.model.build import build_model
    from gppf_dist.tasks.demo import demo_specs
    from gppf_dist.tasks.detection import DetectionMAP
    from gppf_dist.tasks.registry import get_task_type, make_spec

    dist.init_process_group("gloo")
    try:
        torch.manual_seed(0)
        manifest = load_manifest(Path(root))
        spaces = manifest.label_spaces()
        specs = {n: make_spec(n, s.type, s.input_size, spaces[n]) for n, s in demo_specs().items()}
        model = build_model(model_config_from_dict(yaml.safe_load(CONF.read_text())), specs)
        if fail and dist.get_rank() == 0:

            def broken(self: DetectionMAP, states: list[Any]) -> dict[str, float]:
                raise ValueError("no boxes")

            DetectionMAP.compute = broken  # type: ignore[method-assign]
        try:
            return evaluate(
                model, root=Path(root), manifest=manifest, specs=specs,
                task_types={n: get_task_type(s.type) for n, s in specs.items()}, batch_size=8,
                rank=dist.get_rank(), world_size=dist.get_world_size(),
                device=torch.device("cpu"),
            )  # fmt: skip
        except RuntimeError as err:
            return f"raised: {err}"
    finally:
        dist.destroy_process_group()


def test_every_rank_gets_rank_0s_merge_and_it_is_the_one_process_result(
    demo_shards: Path,
) -> None:
    """On the demo corpus, whose validation split gives every metric a value."""
    one = run_distributed(_evaluate, 1, str(demo_shards), False)[0]
    two = run_distributed(_evaluate, 2, str(demo_shards), False)
    assert json.dumps(two[0], sort_keys=True) == json.dumps(two[1], sort_keys=True)
    assert sorted(two[0]) == sorted(one) and len(one) == 8
    for task, metrics in one.items():
        assert not any(math.isnan(v) for v in metrics.values()), (task, metrics)
        assert two[0][task] == pytest.approx(metrics, rel=1e-5), task


def test_a_metric_failing_on_rank_0_raises_on_every_rank(tiny_shards: Path) -> None:
    got = run_distributed(_evaluate, 2, str(tiny_shards), True)
    for message in got:
        assert message == "raised: evaluation of 'det' failed on rank 0: ValueError('no boxes')"
