"""Fixtures of the multi-node tests: the single-node run they are compared with."""

from __future__ import annotations

from pathlib import Path

import pytest

from .multinode import ARGS, losses
from .test_train_cli import run_train


@pytest.fixture(scope="module")
def single_node(tmp_path_factory: pytest.TempPathFactory, tiny_shards: Path) -> list[float]:
    """Per-step losses of the demo on one node with 2 processes (the multi-node runs' world)."""
    run_dir = tmp_path_factory.mktemp("one_node") / "run"
    run_train(run_dir, tiny_shards, "launcher.nproc=2", *ARGS)
    return losses(run_dir)
