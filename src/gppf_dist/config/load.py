"""Turns composed or saved configuration into the typed `RunConfig`.

`gppf-train` composes with Hydra once and saves the resolved YAML; workers call
`load_run_config` on that file and never run Hydra themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gppf_dist.config.plugins import absolute, load_plugins
from gppf_dist.config.schema import RunConfig
from gppf_dist.config.suggest import check_known_keys


def to_run_config(cfg: DictConfig | dict[str, Any]) -> RunConfig:
    """Refuse keys the schema does not know (naming the nearest known one), import `plugins`,
    merge onto the schema and convert to dataclasses (runs every `__post_init__`)."""
    schema = OmegaConf.structured(RunConfig)
    try:
        given = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else cfg
        check_known_keys(given, RunConfig)  # type: ignore[arg-type]
        if isinstance(given, dict) and given.get("plugins"):
            given["plugins"] = absolute(list(given["plugins"]))
            load_plugins(given["plugins"])  # before the checks that look task types up
        merged = OmegaConf.merge(schema, given)  # untyped: the result is a RunConfig
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        raise ValueError(f"invalid configuration: {err}") from err
    assert isinstance(obj, RunConfig)
    return obj


def to_yaml(cfg: RunConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_container(cfg: RunConfig) -> dict[str, Any]:
    out = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    assert isinstance(out, dict)
    return out  # type: ignore[return-value]


def load_run_config(path: str | Path) -> RunConfig:
    """Read a resolved `config.yaml` written by `gppf-train`."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file {str(path)!r} does not exist")
    return to_run_config(OmegaConf.load(path))  # type: ignore[arg-type]


def save_run_config(cfg: RunConfig, path: str | Path) -> None:
    """Atomically write the resolved config (tmp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(to_yaml(cfg))
    tmp.replace(path)
