"""Registers the typed schema with Hydra's ConfigStore, so YAML is checked against it.

Hydra composes against `RunConfig` with one difference: the values of `simt.tasks` are left
untyped during composition, so a task can be added from the command line as one mapping,
`+simt.tasks.colors={type:classification,batch_size:16,input_size:[64,64]}` (OmegaConf refuses
to assign a plain mapping to a node typed as a dataclass), or key by key,
`+simt.tasks.colors.type=classification`. `load.to_run_config` then merges the result onto the
strict schema, where every task is a checked `TaskSection`, before any worker starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from gppf_dist.config.schema import RunConfig, SimtSection

SCHEMA_NAME = "gppf_schema"


@dataclass(kw_only=True)
class ComposedSimt(SimtSection):
    tasks: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class ComposedRun(RunConfig):
    simt: ComposedSimt = field(default_factory=ComposedSimt)


def register_schema() -> None:
    """Make `gppf_schema` available as the first entry of `conf/train.yaml`'s defaults."""
    ConfigStore.instance().store(name=SCHEMA_NAME, node=ComposedRun)
