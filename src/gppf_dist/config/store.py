"""Registers the typed schema with Hydra's ConfigStore, so YAML is checked against it."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from gppf_dist.config.schema import RunConfig

SCHEMA_NAME = "gppf_schema"


def register_schema() -> None:
    """Make `gppf_schema` available as the first entry of `conf/train.yaml`'s defaults."""
    ConfigStore.instance().store(name=SCHEMA_NAME, node=RunConfig)
