"""Training precision and memory format applied to the model itself, not around the engine.

DeepSpeed's `engine.forward` runs the module inside `autocast_if_enabled`
(`deepspeed/runtime/torch_autocast.py`): when an outer autocast is on for the accelerator and
DeepSpeed's own `torch_autocast` section is off, it *switches autocast off* for the forward. On
GPUs an autocast entered by the step around `engine(...)` therefore never reaches the
convolutions and matmuls (its check looks at CUDA autocast only, so CPU runs never showed it).
`autocast_in_forward` enters autocast inside the module's forward instead, below DeepSpeed's
switch, with forward hooks (`always_call`, so an exception cannot leave it entered).

`channels_last` converts the model's 4-D weights too: a convolution whose input is NHWC and
whose weight is NCHW pays a layout conversion per call. That happens *after* the engine wraps
the model: DeepSpeed broadcasts parameters as byte views, which need NCHW-contiguous storage.
The parameter objects stay the same (only their data changes), so the optimizer keeps them.
ZeRO 1/2 flatten parameters into shared buffers, so there only the inputs are NHWC.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle


def compute_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of `trainer.precision` (None: plain fp32)."""
    return {"fp32": None, "bf16": torch.bfloat16}[precision]


def autocast_in_forward(
    module: nn.Module, device_type: str, dtype: torch.dtype
) -> tuple[RemovableHandle, RemovableHandle]:
    """Run every `module(...)` call under `torch.autocast(device_type, dtype)`."""
    stack: list[torch.autocast] = []

    def enter(_module: nn.Module, _args: Any) -> None:
        context = torch.autocast(device_type, dtype=dtype)
        context.__enter__()
        stack.append(context)

    def leave(_module: nn.Module, _args: Any, _output: Any) -> None:
        stack.pop().__exit__(None, None, None)

    return (
        module.register_forward_pre_hook(enter),
        module.register_forward_hook(leave, always_call=True),
    )


def to_channels_last(module: nn.Module) -> nn.Module:
    """4-D parameters and buffers (convolution weights) in NHWC memory format."""
    return module.to(memory_format=torch.channels_last)


def apply_precision(module: nn.Module, device: torch.device, precision: str) -> None:
    """What `trainer.precision` does to the model (before or after the engine wraps it)."""
    dtype = compute_dtype(precision)
    if dtype is not None:
        autocast_in_forward(module, device.type, dtype)
