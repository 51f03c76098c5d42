"""What a background save writes is what the step boundary held: `saving.snapshot` copies every
tensor's storage once (views stay views), so the next step's updates do not reach it and
`torch.save` of the copy is byte for byte `torch.save` of the state at the boundary."""

from __future__ import annotations

import io
from collections import OrderedDict

import pytest
import torch

from gppf_dist.checkpoint.saving import deferring_writes, snapshot, write_deferred, write_torch
from gppf_dist.checkpoint.store import SLOW_SAVE_ENV, fault_delay_s


def _bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_the_copy_is_the_state_at_the_boundary_byte_for_byte() -> None:
    flat = torch.arange(12.0)
    state = {
        "module": OrderedDict(w=flat[:8].view(2, 4), b=flat[8:]),  # views of one flat buffer
        "optimizer": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(4)}}},
        "groups": [{"lr": 0.1, "params": [0]}],
        "meta": ("ds", 3),
    }
    at_boundary = _bytes(state)
    copy = snapshot(state)
    flat.mul_(-1)  # the next step
    state["optimizer"]["state"][0]["exp_avg"].add_(5)
    state["groups"][0]["lr"] = 0.2
    assert _bytes(copy) == at_boundary
    assert copy["module"]["w"].untyped_storage().data_ptr() == (
        copy["module"]["b"].untyped_storage().data_ptr()
    )  # still one storage: written once, as torch.save writes the live state
    assert isinstance(copy["module"], OrderedDict) and copy["meta"] == ("ds", 3)


def test_a_module_state_dict_keeps_its_metadata_and_parameters_their_kind() -> None:
    module = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    state = {"module": module.state_dict(), "param": torch.nn.Parameter(torch.ones(2))}
    copy = snapshot(state)
    assert copy["module"]._metadata == state["module"]._metadata  # versions, for loading
    assert isinstance(copy["param"], torch.nn.Parameter) and copy["param"].requires_grad
    assert _bytes(copy) == _bytes(state)


def test_deferred_writes_are_written_later_as_they_were(tmp_path: object) -> None:
    from pathlib import Path

    root = Path(str(tmp_path))
    value = torch.zeros(3)
    with deferring_writes() as queued:
        assert write_torch({"v": value}, root / "a.pt") is None
    assert not (root / "a.pt").exists() and len(queued) == 1
    value.add_(1)
    write_deferred(queued)
    assert torch.equal(torch.load(root / "a.pt")["v"], torch.zeros(3))


def test_the_slow_save_fault_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SLOW_SAVE_ENV, "4:2.5")
    assert (fault_delay_s(4), fault_delay_s(6)) == (2.5, 0.0)
    monkeypatch.setenv(SLOW_SAVE_ENV, "four")
    with pytest.raises(ValueError, match=f"{SLOW_SAVE_ENV}='four': expected STEP:SECONDS"):
        fault_delay_s(4)
