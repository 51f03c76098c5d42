"""`launch_config` passes torch's `LaunchConfig` only the settings it has: `shutdown_timeout` is
new in torch 2.13, and the launcher must still start workers on torch 2.11 (it raised a
TypeError there before any worker started)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import pytest
from torch.distributed.launcher.api import LaunchConfig

from gppf_dist.launch import local


def test_this_torch_gets_every_setting() -> None:
    config = local.launch_config(min_nodes=1, max_nodes=1, nproc_per_node=2, shutdown_timeout=7)
    assert config.nproc_per_node == 2
    if "shutdown_timeout" in {f.name for f in fields(LaunchConfig)}:
        assert config.shutdown_timeout == 7


def test_a_setting_an_older_torch_lacks_is_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    @dataclass
    class OlderLaunchConfig:  # torch 2.11's fields, less the ones this test does not use
        min_nodes: int
        max_nodes: int
        nproc_per_node: int
        signals_to_handle: str = "SIGTERM,SIGINT,SIGHUP,SIGQUIT"

    monkeypatch.setattr(local, "LaunchConfig", OlderLaunchConfig)
    config = local.launch_config(
        min_nodes=1, max_nodes=1, nproc_per_node=2, signals_to_handle="SIGTERM", shutdown_timeout=7
    )
    assert config == OlderLaunchConfig(1, 1, 2, "SIGTERM")
