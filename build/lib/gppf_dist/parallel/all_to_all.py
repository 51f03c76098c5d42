"""Exchanges inside an expert-parallel group, differentiable, without send buffers.

`exchange(inputs, recv_sizes, group)`: group rank p sends `inputs[q]` to every group rank q and
receives `recv_sizes[q]` values from it (uneven and zero sizes). The same tensor object may be
given for several peers: it is sent from where it lies, never concatenated into a k-fold buffer.
Backward is the reverse exchange; an input given for several peers gets the sum of what they
send back (autograd adds up a tensor's repeated uses).

How the messages move:
- accelerator tensors (NCCL): the list `all_to_all`, i.e. NCCL's grouped per-peer send and
  receive, which takes any size per peer;
- CPU tensors (gloo): one `batch_isend_irecv` with a send and a receive per peer. gloo's list
  `all_to_all` would not do: with torch 2.13 it refuses entries of different sizes ("invalid
  tensor size at index 1"), and `all_to_all_single` needs one contiguous send buffer, i.e. the
  copies this module avoids.
Either way every rank posts a message to and from every peer in every call, zero-size included,
so the calls of a group stay matched (DESIGN.md §5.4).

`check_splits` is the debug check for sizes that sender and receiver compute separately: on
NCCL a disagreement hangs or corrupts instead of raising.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def uses_list_all_to_all(device: torch.device) -> bool:
    """Accelerator tensors (NCCL) take the list `all_to_all`; CPU tensors (gloo, whose list
    form needs equal sizes) go by paired send and receive."""
    return device.type != "cpu"


def _post(outputs: list[torch.Tensor], inputs: list[torch.Tensor], group: Any) -> None:
    if uses_list_all_to_all(inputs[0].device):
        dist.all_to_all(outputs, inputs, group=group)
        return
    me = dist.get_rank(group)
    ops = []
    for q, (out, inp) in enumerate(zip(outputs, inputs, strict=True)):
        if q == me:
            out.copy_(inp)
            continue
        ops.append(dist.P2POp(dist.isend, inp, group=group, group_peer=q))
        ops.append(dist.P2POp(dist.irecv, out, group=group, group_peer=q))
    if ops:
        for work in dist.batch_isend_irecv(ops):
            work.wait()


def _exchange(inputs: list[torch.Tensor], recv_sizes: list[int], group: Any) -> list[torch.Tensor]:
    assert len(inputs) == len(recv_sizes), (len(inputs), recv_sizes)
    assert len({t.dtype for t in inputs}) == 1, [t.dtype for t in inputs]
    inputs = [t.contiguous() for t in inputs]  # a no-op (the same object) for a flat activation
    outputs = [inputs[0].new_empty(n) for n in recv_sizes]
    _post(outputs, inputs, group)
    return outputs


class _Exchange(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, recv_sizes: list[int], group: Any, *inputs: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        ctx.send_sizes, ctx.group = [t.numel() for t in inputs], group
        return tuple(_exchange(list(inputs), recv_sizes, group))

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        return (None, None, *_exchange(list(grads), ctx.send_sizes, ctx.group))


def exchange(inputs: list[torch.Tensor], recv_sizes: list[int], group: Any) -> list[torch.Tensor]:
    """Send the flat `inputs[q]` to group rank q, receive `recv_sizes[p]` values from group rank
    p (same dtype); one message each way per pair, zero-size included, in forward and backward."""
    assert all(t.dim() == 1 for t in inputs), [t.shape for t in inputs]
    return list(_Exchange.apply(recv_sizes, group, *inputs))


def check_splits(
    send_sizes: list[int], recv_sizes: list[int], group: Any, device: torch.device, where: str
) -> None:
    """Raise on every rank concerned when a size I send differs from what its receiver expects.

    One small exchange (int64, two values per peer: what I send to q, what I expect from q), the
    same on every rank, so it cannot hang where the data exchange would; it syncs with the host.
    """
    me, size = dist.get_rank(group), len(send_sizes)
    mine = torch.tensor(list(zip(send_sizes, recv_sizes, strict=True)), dtype=torch.int64)
    theirs = torch.empty(size * 2, dtype=torch.int64, device=device)
    dist.all_to_all_single(theirs, mine.reshape(-1).to(device), group=group)
    problems = []
    for q, (they_send, they_expect) in enumerate(theirs.view(size, 2).tolist()):
        if q == me:
            continue
        if they_send != recv_sizes[q]:
            problems.append(
                f"EP rank {me} expects {recv_sizes[q]} values from EP rank {q}, "
                f"which sends {they_send}"
            )
        if they_expect != send_sizes[q]:
            problems.append(
                f"EP rank {me} sends {send_sizes[q]} values to EP rank {q}, "
                f"which expects {they_expect}"
            )
    if problems:
        raise RuntimeError(
            f"expert-parallel split sizes disagree at {where}: "
            + "; ".join(problems)
            + " (parallel.check_splits; the plan, the routes or the recorded shapes differ "
            "between these ranks)"
        )
