"""Optimizer state loaded by name lands where torch's own `Optimizer.load_state_dict` puts it.

A checkpoint is read on the host; the parameters live on the accelerator. Fused (and
capturable) Adam reads its `step` counter on the device, so a `step` left on the host fails
the first optimizer step after every resume on CUDA. The parameters here are on the `meta`
device, so a tensor left behind on the CPU shows without a GPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from gppf_dist.checkpoint.named_state import load_named_state, save_named_state
from gppf_dist.model.owners import SHARED, OwnerMap


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    model.register_parameter("scale", nn.Parameter(torch.tensor(1.5)))  # 0-dim state too
    return model


def _owners(model: nn.Module) -> OwnerMap:
    return OwnerMap({name: SHARED for name, _ in model.named_parameters()})


def _stepped(fused: bool) -> tuple[nn.Module, torch.optim.Optimizer]:
    model = _model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, fused=fused)
    (model(torch.ones(2, 4)).sum() * model.scale).backward()
    optimizer.step()
    return model, optimizer


def _devices(optimizer: torch.optim.Optimizer) -> list[tuple[str, str]]:
    return [
        (key, str(value.device))
        for state in optimizer.state.values()
        for key, value in sorted(state.items())
    ]


@pytest.mark.parametrize("fused", [True, False])
def test_state_goes_where_torch_puts_it(tmp_path: Path, fused: bool) -> None:
    saved, saved_opt = _stepped(fused)
    save_named_state(saved, saved_opt, _owners(saved), tmp_path, write_shared=True,
                     write_legos=True)  # fmt: skip

    ours = _model().to("meta")
    ours_opt = torch.optim.AdamW(ours.parameters(), lr=0.1, fused=fused)
    load_named_state(ours, ours_opt, _owners(ours), tmp_path)

    theirs = _model().to("meta")
    theirs_opt = torch.optim.AdamW(theirs.parameters(), lr=0.1, fused=fused)
    theirs_opt.load_state_dict(saved_opt.state_dict())

    assert _devices(ours_opt) == _devices(theirs_opt)
    steps = {device for key, device in _devices(ours_opt) if key == "step"}
    assert steps == ({"meta"} if fused else {"cpu"})
    moments = {device for key, device in _devices(ours_opt) if key != "step"}
    assert moments == {"meta"}  # the 0-dim parameter's moments included
