"""Task-level expert parallelism: each rank holds 1/E of every lego layer's units.

A lego layer's contract is `mix(h, indices, gates) = Σ_{i∈indices} g_i · lego_i(h)`.
`ExpertLegoLayer` keeps only its rank's legos and computes the mixture by *task-level* dispatch
inside the EP group:

  1. dispatch: a rank sends its activation h (the whole batch of its current task) to each
     other owner of a selected lego (the same tensor to each, from where it lies, no k-fold
     send buffer; `all_to_all.exchange`: uneven and zero sizes);
  2. each owner applies its selected legos, gated by the task's route, to every activation it got;
  3. combine: results go back by the reverse exchange and are summed.

Activations and their gradients travel in the session's `wire_dtype`, the training precision
(bf16 under bf16 training), the same on every rank.

Split sizes need no exchange: every rank knows, from the SIMT plan, which task each EP peer runs
in the current micro-step, the task's route (replicated router) and its activation shapes
(recorded once at start-up), and the wire dtype from the config. Ranks of an EP group run the
same number of micro-steps (idle ones run dummy exchanges), and every micro-step issues exactly
two exchanges per lego layer forward and two backward, in layer order, on every rank:
collectives stay symmetric (DESIGN.md §5.4). With `check_splits` (parallel.check_splits, a debug
aid) the peers also compare their split sizes before each layer's dispatch, one small extra
exchange, and raise naming the layer and the ranks if sender and receiver disagree; the combine
and both backward exchanges reuse the dispatch's sizes, swapped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from gppf_dist.model.lego import LegoLayer, Route, mixture
from gppf_dist.parallel.all_to_all import check_splits, exchange
from gppf_dist.parallel.plan import EPLayout

Shapes = dict[str, list[tuple[int, ...] | None]]


@dataclass
class PeerWork:
    task: str | None
    batch: int = 0


@dataclass
class EPSession:
    """What every ExpertLegoLayer of this rank needs to know in the current micro-step."""

    layout: EPLayout
    group: dist.ProcessGroup
    ep_rank: int
    route_of: Callable[[str], Route]
    shapes: Shapes
    """task -> per lego layer the activation shape (without batch), None if the task skips it."""
    num_layers: int
    peers: list[PeerWork] = field(default_factory=list)
    next_layer: int = 0
    routes: dict[str, Route] = field(default_factory=dict)
    layers: list[ExpertLegoLayer] = field(default_factory=list)
    local_calls: int = 0
    remote_calls: int = 0
    wire_dtype: torch.dtype = torch.float32
    """Activations and gradients travel in this dtype (the training precision), set alike on
    every rank: receivers size their buffers from the plan, the recorded shapes and it, and need
    no dtype from the sender (an idle rank has none)."""
    check_splits: bool = False
    """Debug (parallel.check_splits): peers compare split sizes before each dispatch (one small
    exchange and a host sync per lego layer)."""

    def begin(self, peers: list[PeerWork]) -> None:
        assert len(peers) == self.layout.ep_size
        self.peers, self.next_layer = peers, 0
        self.routes = {p.task: self.route_of(p.task) for p in peers if p.task is not None}

    def finish(self, token: torch.Tensor) -> torch.Tensor:
        """Dummy exchanges for the layers this rank's task did not reach (or all of them, for an
        idle micro-step); returns a zero that the loss must include, so backward runs them."""
        while self.next_layer < self.num_layers:
            layer = self.layers[self.next_layer]
            self.next_layer += 1
            out = layer.exchange(None, [], token)
            token = token + out.sum() * 0.0
        return token

    def selected(self, task: str, layer: int) -> list[int]:
        return [int(i) for i in self.routes[task].indices[layer]]


class ExpertLegoLayer(nn.Module):
    """Drop-in for a LegoLayer under expert parallelism (see module docstring)."""

    def __init__(self, layer: LegoLayer, index: int, session: EPSession) -> None:
        super().__init__()
        owned = session.layout.owned(session.ep_rank, index)
        # Global lego ids as keys: parameter names match the dense model's (legos.<id>.*).
        self.legos = nn.ModuleDict({str(i): layer.legos[i] for i in owned})
        self.fused = layer.fused
        self.checkpointed = layer.checkpointed
        """Recompute the local lego mixture in backward (never the exchanges: their backward
        is already a collective, and a recomputed one would break the lockstep)."""
        self.index = index
        self.session = session

    def _mixture(self, ids: list[int], h: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        legos = [self.legos[str(i)] for i in ids]
        return mixture(legos, h, gates, self.fused, self.checkpointed and self.training)

    def forward(self, h: torch.Tensor, indices: list[int], gates: torch.Tensor) -> torch.Tensor:
        s = self.session
        assert s.next_layer == self.index, (s.next_layer, self.index)
        s.next_layer += 1
        return self.exchange(h, [int(i) for i in indices], None)

    def exchange(
        self, h: torch.Tensor | None, indices: list[int], token: torch.Tensor | None
    ) -> torch.Tensor:
        s, layout = self.session, self.session.layout
        size, me, wire = layout.ep_size, s.ep_rank, s.wire_dtype
        # ---- what I send: my activation, the same tensor to each *other* owner of a selected lego
        owners = sorted({layout.owner(i, self.index) for i in indices})
        remote = [p for p in owners if p != me]
        if h is not None:
            flat = h.reshape(-1).to(wire)
            # Without a remote owner the dispatch stays in the graph through an empty slice of h:
            # its backward is a collective the peers are waiting for.
            nothing = flat.new_empty(0) if remote else flat[:0]
            send = [flat if p in remote else nothing for p in range(size)]
            s.local_calls += int(me in owners)
            s.remote_calls += len(remote)
        else:
            assert token is not None
            send = [token.new_zeros(0, dtype=wire) + token.to(wire) * 0.0] * size
        send_sizes = [t.numel() for t in send]
        # ---- what I receive: each other peer's activation if its task uses one of my legos
        recv_sizes, served = [], []
        for q, peer in enumerate(s.peers):
            shape = s.shapes[peer.task][self.index] if peer.task is not None else None
            mine = []
            if shape is not None and q != me:
                mine = [j for j, i in enumerate(s.selected(peer.task, self.index))
                        if layout.owner(i, self.index) == me]  # fmt: skip
            served.append((peer, shape, mine))
            recv_sizes.append(peer.batch * math.prod(shape) if mine and shape else 0)
        if s.check_splits:
            where = f"lego layer {self.index}"
            check_splits(send_sizes, recv_sizes, s.group, send[0].device, where)
        received = exchange(send, recv_sizes, s.group)
        # ---- serve: apply my selected legos to each received activation, gated by its route
        back = []
        for (peer, shape, mine), x in zip(served, received, strict=True):
            if x.numel() == 0:
                back.append(x)  # keeps the dispatch in the graph of the combine
                continue
            assert peer.task is not None and shape is not None
            x = self._compute_input(x.view(peer.batch, *shape))
            out = self._serve(peer.task, mine, x).reshape(-1).to(wire)
            assert out.numel() == x.numel(), (self.index, out.numel(), x.numel())
            back.append(out)
        # ---- combine: results return by the reverse exchange and are summed with my own part
        results = exchange(back, send_sizes, s.group)
        if h is None:
            return torch.cat(results)  # empty, but its backward runs the peers' exchanges
        if remote:
            total = results[remote[0]].view(h.shape).to(h.dtype)
            for p in remote[1:]:
                total = total + results[p].view(h.shape).to(h.dtype)
        else:
            # The combined result is empty but must stay in the graph: its backward is a
            # collective the peers are waiting for (a pruned branch would hang them).
            total = results[0].sum() * 0.0
        if me in owners:
            task = s.peers[me].task
            assert task is not None
            selected = s.selected(task, self.index)
            mine = [j for j, i in enumerate(selected) if layout.owner(i, self.index) == me]
            total = total + self._serve(task, mine, h)
        return total.to(h.dtype)

    def _compute_input(self, x: torch.Tensor) -> torch.Tensor:
        """A received activation as the legos take it: under autocast as it came (autocast casts
        per op); outside autocast (e.g. the dummy exchanges evaluation runs after the model's
        forward, which serve the peers) in the legos' own dtype."""
        if torch.is_autocast_enabled(x.device.type):
            return x
        return x.to(next(self.legos.parameters()).dtype)

    def _serve(self, task: str, positions: list[int], x: torch.Tensor) -> torch.Tensor:
        """Σ over the route positions `positions` (legos I own) of gate · lego(x)."""
        route = self.session.routes[task]
        ids = [int(route.indices[self.index][j]) for j in positions]
        row = route.gates[self.index]  # pick by Python ints: views, no index tensor to upload
        return self._mixture(ids, x, torch.stack([row[j] for j in positions]))


def record_lego_shapes(model: nn.Module, tasks: dict[str, tuple[int, int]]) -> Shapes:
    """Run each task once (batch 1, eval, no grad) and record every lego layer's input shape."""
    layers = [m for m in model.modules() if isinstance(m, LegoLayer)]
    current: list[tuple[int, ...] | None] = []
    hooks = [
        layer.register_forward_pre_hook(
            lambda mod, args, i=i: current.__setitem__(i, tuple(args[0].shape[1:]))
        )
        for i, layer in enumerate(layers)
    ]
    shapes: Shapes = {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for task, (h, w) in tasks.items():
                current[:] = [None] * len(layers)
                device = next(model.parameters()).device
                model(task, torch.zeros(1, 3, h, w, dtype=torch.uint8, device=device))
                shapes[task] = list(current)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return shapes


def apply_expert_parallel(model: nn.Module, session: EPSession) -> list[ExpertLegoLayer]:
    """Replace every LegoLayer (in forward order) with an ExpertLegoLayer holding 1/E of it."""
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, LegoLayer)]
    placement = session.layout.placement
    if placement and len(placement) != len(targets):
        raise ValueError(
            f"lego placement has {len(placement)} layers, the model {len(targets)} lego layers"
        )
    replaced = []
    for index, (name, layer) in enumerate(targets):
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        expert = ExpertLegoLayer(layer, index, session)
        setattr(parent, attr, expert)
        replaced.append(expert)
    session.layers = replaced
    session.num_layers = len(replaced)
    return replaced
