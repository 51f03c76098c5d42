"""Expert-parallel legos on real gloo processes: half the lego parameters per rank at E=2, and
forward outputs and reduced gradients equal to the dense model's, with ranks running different
tasks (different input shapes) and one rank idle for a micro-step."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from .harness import run_distributed

TASKS = ["cls_object", "det", "pose"]


def ep_step(
    placement: tuple[tuple[int, ...], ...] = (), checkpointed: bool = False
) -> dict[str, Any]:
    import torch.distributed as dist

    from gppf_dist.config.model import ModelConfig
    from gppf_dist.dist.env import init_distributed
    from gppf_dist.dist.mesh import build_expert_groups
    from gppf_dist.model.build import build_model
    from gppf_dist.model.lego import set_activation_checkpointing
    from gppf_dist.parallel.expert import (
        EPSession,
        ExpertLegoLayer,
        PeerWork,
        apply_expert_parallel,
        record_lego_shapes,
    )
    from gppf_dist.parallel.plan import EPLayout
    from gppf_dist.simt.reduce import reduce_gradients
    from gppf_dist.tasks.demo import demo_specs, synthetic_batch
    from gppf_dist.tasks.registry import get_task_type

    info = init_distributed("gloo", torch.device("cpu"), 60)
    specs = {t: s for t, s in demo_specs().items() if t in TASKS}
    torch.manual_seed(0)
    model = build_model(ModelConfig(), specs)
    owners = model.param_owners()
    gen = torch.Generator().manual_seed(5)
    data = {t: synthetic_batch(specs[t], 2, gen) for t in TASKS}
    groups = torch.zeros(2, dtype=torch.long)

    def loss_of(task: str) -> torch.Tensor:
        images, targets = data[task]
        return get_task_type(specs[task].type).loss(model(task, images), targets, groups).sum()

    # Dense reference, computed on every rank: the sum of all three tasks' losses.
    sum(loss_of(t) for t in TASKS).backward()
    dense_grads = {n: p.grad / 2 for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    lego_params_dense = sum(p.numel() for n, p in model.named_parameters() if "legos" in n)

    set_activation_checkpointing(model, checkpointed)  # the worker's order: before sharding
    layout = EPLayout(2, 2, 4, placement)
    mesh = build_expert_groups(layout, info.rank)
    shapes = record_lego_shapes(model, {t: tuple(s.input_size) for t, s in specs.items()})
    session = EPSession(
        layout=layout,
        group=mesh.ep,
        ep_rank=info.rank,
        route_of=model.router.route,
        shapes=shapes,
        num_layers=0,
    )
    experts = apply_expert_parallel(model, session)
    assert all(isinstance(e, ExpertLegoLayer) and e.checkpointed == checkpointed for e in experts)
    lego_params_ep = sum(p.numel() for n, p in model.named_parameters() if "legos" in n)

    # Micro-steps: rank 0 runs cls_object then pose; rank 1 runs det then idles.
    plan = [["cls_object", "pose"], ["det", None]]
    for j in range(2):
        session.begin([PeerWork(plan[r][j], 2 if plan[r][j] else 0) for r in range(2)])
        task = plan[info.rank][j]
        if task is None:
            session.finish(torch.zeros((), requires_grad=True)).backward()
        else:
            (loss_of(task) + session.finish(torch.zeros(()))).backward()
    named = list(model.named_parameters())
    produced = {n for n, p in named}  # every parameter this rank holds
    dense = [(n, p) for n, p in named if not owners.is_lego(n)]
    legos = [(n, p) for n, p in named if owners.is_lego(n)]
    reduce_gradients(dense, produced, 2)  # sum over both ranks / world size
    reduce_gradients(legos, produced, 2, group=mesh.edp)  # EDP group of one: owner's sum / 2
    grads = {n: p.grad.clone() for n, p in named if p.grad is not None}
    dist.destroy_process_group()
    return {
        "dense": dense_grads,
        "ep": grads,
        "lego_dense": lego_params_dense,
        "lego_ep": lego_params_ep,
    }


@pytest.mark.parametrize(
    ("placement", "checkpointed"),
    [
        ((), False),
        (((1, 0, 0, 1), (0, 1, 1, 0), (1, 1, 0, 0), (0, 1, 0, 1)), False),
        ((), True),  # the local lego mixture recomputed in backward; exchanges are not
    ],
    ids=["contiguous", "placed", "checkpointed"],
)
def test_ep2_halves_legos_and_matches_dense_gradients(
    placement: tuple[tuple[int, ...], ...], checkpointed: bool
) -> None:
    results = run_distributed(ep_step, 2, placement, checkpointed)
    for result in results:
        assert result["lego_ep"] * 2 == result["lego_dense"]
        for name, grad in result["ep"].items():
            if name not in result["dense"]:  # a lego no task selected: zero-filled, exactly 0
                assert not grad.any(), name
                continue
            torch.testing.assert_close(grad, result["dense"][name], rtol=1e-4, atol=1e-5)
    owned = [set(r["ep"]) for r in results]
    lego_names = {n for n in results[0]["dense"] if ".legos." in n}
    assert lego_names <= owned[0] | owned[1]  # every used lego's gradient lives on its owner
