"""TaskRouter: deterministic Gumbel noise, straight-through gates, freezing, regularizers."""

from __future__ import annotations

import torch

from gppf_dist.config.model import RouterConfig
from gppf_dist.model.router import TaskRouter

TASKS = ["a", "b", "c"]


def make(**kw: object) -> TaskRouter:
    return TaskRouter(TASKS, num_layers=5, num_legos=4, top_k=2, cfg=RouterConfig(**kw))


def test_gumbel_noise_deterministic_and_isolated_from_global_rng() -> None:
    r1, r2 = make(gumbel_warmup_steps=10), make(gumbel_warmup_steps=10)
    torch.manual_seed(1)
    n1 = r1.gumbel_noise(1, 3)
    torch.manual_seed(2)
    n2 = r2.gumbel_noise(1, 3)
    torch.testing.assert_close(n1, n2, rtol=0, atol=0)
    assert not torch.equal(n1, r1.gumbel_noise(1, 4))
    assert not torch.equal(n1, r1.gumbel_noise(2, 3))
    assert not torch.equal(n1[0], n1[1])  # layers differ
    state = torch.random.get_rng_state()
    r1.gumbel_noise(0, 0)
    assert torch.equal(state, torch.random.get_rng_state())


def test_routes_identical_across_instances_during_warmup() -> None:
    r1, r2 = make(gumbel_warmup_steps=100, gumbel_tau=2.0), make(gumbel_warmup_steps=100)
    r2.load_state_dict(r1.state_dict())
    r2.cfg = r1.cfg
    for step in range(20):
        r1.set_step(step)
        r2.set_step(step)
        a, b = r1.route("b"), r2.route("b")
        assert a.indices == b.indices
        torch.testing.assert_close(a.gates, b.gates)


def test_noise_changes_selection_during_warmup_only() -> None:
    r = make(gumbel_warmup_steps=50)
    clean = make().route("a").indices
    chosen = set()
    for step in range(50):
        r.set_step(step)
        chosen.add(str(r.route("a").indices))
    assert len(chosen) > 1
    r.set_step(50)
    assert r.route("a").indices == clean
    r.set_step(0)
    r.eval()
    assert r.route("a").indices == clean


def test_gates_sum_to_one_and_straight_through_reaches_all_logits() -> None:
    r = make()
    route = r.route("a")
    torch.testing.assert_close(route.gates.sum(-1), torch.ones(5))
    (route.gates[:, 0] * 3.0 + route.gates[:, 1]).sum().backward()
    grad = r.logits["a"].grad
    assert grad is not None and (grad != 0).all()
    assert r.logits["b"].grad is None


def test_freeze_fixes_selection_and_survives_state_dict() -> None:
    r = make(freeze_after=3)
    r.set_step(2)
    assert not bool(r.is_frozen)
    r.set_step(3)
    frozen = r.route("c").indices
    with torch.no_grad():
        r.logits["c"].mul_(-1.0)  # would flip the top-k if logits still chose
    assert r.route("c").indices == frozen
    assert r.route("c").gates.requires_grad
    r2 = make(freeze_after=3)
    r2.load_state_dict(r.state_dict())
    assert r2.route("c").indices == frozen
    usage = r2.usage()
    assert ((usage[2] > 0).nonzero()[:, 1].view(5, 2).sort(-1).values.tolist()) == [
        sorted(x) for x in frozen
    ]


def test_balance_zero_when_uniform_and_sharing_zero_when_identical() -> None:
    r = make(balance_weight=1.0, sharing_weight=1.0)
    with torch.no_grad():
        for name in TASKS:
            r.logits[name].zero_()
    assert abs(r.balance_loss().item()) < 1e-6
    assert abs(r.sharing_loss().item()) < 1e-6
    with torch.no_grad():
        r.logits["a"][:, 0] = 5.0
        r.logits["b"][:, 0] = 5.0
        r.logits["c"][:, 0] = 5.0
    assert r.balance_loss().item() > 0.5
    assert abs(r.sharing_loss().item()) < 1e-6
    with torch.no_grad():
        r.logits["b"][:, 0] = 0.0
        r.logits["b"][:, 3] = 5.0
    assert r.sharing_loss().item() > 0.3
    reg = r.regularizer()
    torch.testing.assert_close(reg, r.balance_loss() + r.sharing_loss())
