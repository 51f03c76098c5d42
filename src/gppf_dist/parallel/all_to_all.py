"""`all_to_all_single` with uneven (and zero) splits, differentiable.

The backward of a dispatch is the reverse exchange with the splits swapped, so every rank issues
exactly one collective in forward and one in backward per call, whatever its split sizes.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


class _AllToAll(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        flat: torch.Tensor,
        send_splits: list[int],
        recv_splits: list[int],
        group: dist.ProcessGroup,
    ) -> torch.Tensor:
        ctx.send_splits, ctx.recv_splits, ctx.group = send_splits, recv_splits, group
        out = flat.new_empty(sum(recv_splits))
        dist.all_to_all_single(out, flat.contiguous(), recv_splits, send_splits, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:  # type: ignore[override]
        out = grad.new_empty(sum(ctx.send_splits))
        dist.all_to_all_single(
            out, grad.contiguous(), ctx.send_splits, ctx.recv_splits, group=ctx.group
        )
        return out, None, None, None


def all_to_all(
    flat: torch.Tensor, send_splits: list[int], recv_splits: list[int], group: dist.ProcessGroup
) -> torch.Tensor:
    """Send `flat[sum(send[:p]) : sum(send[:p+1])]` to group rank p; receive recv[p] from p."""
    assert flat.dim() == 1 and flat.numel() == sum(send_splits)
    return _AllToAll.apply(flat, send_splits, recv_splits, group)
