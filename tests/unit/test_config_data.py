"""`data.shards_per_group` is a public key, validated when the config is built."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gppf_dist.config.schema import RunConfig

Compose = Callable[..., RunConfig]


def test_shards_per_group_default_and_override(compose_run: Compose) -> None:
    assert compose_run().data.shards_per_group == 1
    assert compose_run("data.shards_per_group=4").data.shards_per_group == 4


def test_shards_per_group_below_one_names_the_key(compose_run: Compose) -> None:
    with pytest.raises(ValueError, match=r"`data.shards_per_group`=0: must be >= 1"):
        compose_run("data.shards_per_group=0")
