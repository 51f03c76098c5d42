"""The checkpoint's small parts: the COMPLETE marker (one reader), the typed client state and
atomically written run files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gppf_dist.checkpoint.client_state import ClientState
from gppf_dist.checkpoint.layout import COMPLETE
from gppf_dist.checkpoint.manager import mark_complete, resume_tag
from gppf_dist.checkpoint.marker import ZERO_UNKNOWN, Marker, Topology, read_marker
from gppf_dist.data.load.streams import StreamPosition
from gppf_dist.logging.run_files import read_json, write_json_atomic


def test_marker_round_trips_and_keeps_its_json_keys(tmp_path: Path) -> None:
    marker = Marker(12, Topology(4, 2, 0), {"per_sample_s": {"det": 0.5}})
    (tmp_path / "step_00000012").mkdir()
    mark_complete(tmp_path, "step_00000012", marker.to_json())
    tag_dir = tmp_path / "step_00000012"
    assert read_marker(tag_dir) == marker
    saved = json.loads((tag_dir / COMPLETE).read_text())
    assert saved == {"step": 12, "world_size": 4, "ep_size": 2, "zero_stage": 0,
                     "costs": {"per_sample_s": {"det": 0.5}}}  # fmt: skip
    assert resume_tag(tmp_path, "auto") == "step_00000012"
    assert resume_tag(tmp_path, "never") is None


def test_old_markers_and_missing_markers(tmp_path: Path) -> None:
    assert read_marker(tmp_path) is None  # no COMPLETE: not a checkpoint (yet)
    (tmp_path / COMPLETE).write_text(json.dumps({"step": 3}))
    assert read_marker(tmp_path) == Marker(3, None, None)
    (tmp_path / COMPLETE).write_text(json.dumps({"step": 3, "world_size": 2}))
    assert read_marker(tmp_path) == Marker(3, Topology(2, 1, ZERO_UNKNOWN), None)
    (tmp_path / "gppf").mkdir()
    (tmp_path / "gppf" / "shared.pt").write_bytes(b"")
    assert read_marker(tmp_path) == Marker(3, Topology(2, 0, 0), None)


def test_a_damaged_marker_names_its_file(tmp_path: Path) -> None:
    (tmp_path / COMPLETE).write_text('{"step": ')
    with pytest.raises(ValueError, match="not valid JSON") as err:
        read_marker(tmp_path)
    assert str(tmp_path / COMPLETE) in str(err.value)


def test_client_state_round_trips_and_old_states_get_defaults() -> None:
    positions = {"det": {0: StreamPosition(1, 7)}}
    state = ClientState(5, positions, "abc", 2, {"x": 1}, {"world_size": 2}, None)
    saved = state.to_dict()
    assert saved["data_positions"]["det"][0] == StreamPosition(1, 7)  # kept as it is
    assert ClientState.from_dict(saved) == state
    old = ClientState.from_dict({"step": 7, "data_positions": {}, "wandb_run_id": "r"})
    assert (old.step, old.world_size, old.costs, old.plan, old.rng) == (7, 0, None, None, None)
    assert ClientState.from_dict({"ds_extra_key": 1}).step == 0  # DeepSpeed's own keys ignored


def test_run_files_are_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "eval.json"
    assert read_json(path) is None
    write_json_atomic(path, {"step": 1})
    write_json_atomic(path, {"step": 2})
    assert read_json(path) == {"step": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["eval.json"]  # no temporary file left


def test_frozen_routes_survive_loading_by_name(tmp_path: Path) -> None:
    """A router frozen at some step keeps that selection after a load by name, even when its
    logits have moved since (re-deriving it from the logits would change the route)."""
    import torch

    from gppf_dist.checkpoint.named_state import load_named_state, save_named_state
    from gppf_dist.config.model import ModelConfig, RouterConfig
    from gppf_dist.model.build import build_model
    from tests.fake_task import fake_spec

    def model() -> torch.nn.Module:
        torch.manual_seed(0)
        cfg = ModelConfig(router=RouterConfig(freeze_after=1))
        return build_model(cfg, {"a": fake_spec("a")})

    saved = model()
    saved.set_step(1)  # frozen now
    frozen = saved.router.route("a").indices
    with torch.no_grad():  # the logits move after freezing: their top-k is no longer the route
        saved.router.logits["a"].copy_(-saved.router.logits["a"])
    assert saved.router.route("a").indices == frozen
    optimizer = torch.optim.SGD(saved.parameters(), lr=0.1)
    save_named_state(saved, optimizer, saved.param_owners(), tmp_path, write_shared=True,
                     write_legos=True)  # fmt: skip
    loaded = model()
    load_named_state(loaded, None, loaded.param_owners(), tmp_path)
    loaded.set_step(2)
    assert loaded.router.route("a").indices == frozen
