"""The real conf/ tree composes against the typed schema; bad configuration fails fast."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

from gppf_dist.config.load import load_run_config, save_run_config
from gppf_dist.config.schema import RunConfig, TaskSection
from gppf_dist.preflight.validate import validate_run

Compose = Callable[..., RunConfig]


def test_default_and_demo_compose(compose_run: Compose) -> None:
    cfg = compose_run()
    assert cfg.run.dir == "runs/default"
    demo = compose_run("experiment=demo")
    assert demo.run.dir == "runs/demo" and demo.experiment == "demo"
    assert len(demo.simt.active_tasks()) == 8


def test_public_keys_override(compose_run: Compose) -> None:
    cfg = compose_run(
        "run.dir=/tmp/x",
        "trainer.max_steps=5",
        "trainer.seed=3",
        "launcher=none",
        "launcher.nproc=1",
        "data.root=/data",
        "model=gppf_r50_tiny",
        "parallel.ep_size=1",
        "parallel.zero_stage=1",
        "logger=none",
        "logger.mode=disabled",
        "resume=never",
    )
    assert (cfg.trainer.max_steps, cfg.trainer.seed, cfg.launcher.name) == (5, 3, "none")
    assert cfg.parallel.zero_stage == 1 and cfg.logger.name == "none" and cfg.resume == "never"


def test_misspelled_key_is_rejected_naming_it(compose_run: Compose) -> None:
    with pytest.raises(ConfigCompositionException, match="max_step"):
        compose_run("trainer.max_step=5")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("parallel.zero_stage=3", r"`parallel.zero_stage`=3"),
        ("trainer.precision=fp16", r"`trainer.precision`='fp16': must be fp32 or bf16"),
    ],
)
def test_single_field_rule_names_key_and_value(
    compose_run: Compose, override: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        compose_run(override)


def test_deepspeed_launcher_composes(compose_run: Compose) -> None:
    cfg = compose_run("launcher=deepspeed", "launcher.hostfile=h", "trainer.precision=bf16")
    assert (cfg.launcher.name, cfg.launcher.hostfile, cfg.trainer.precision) == (
        "deepspeed", "h", "bf16",
    )  # fmt: skip


def test_saved_config_round_trips(compose_run: Compose, tmp_path: Path) -> None:
    cfg = compose_run("experiment=demo", "trainer.max_steps=7")
    save_run_config(cfg, tmp_path / "config.yaml")
    assert load_run_config(tmp_path / "config.yaml") == cfg


def test_unknown_task_names_key_and_value(compose_run: Compose, tiny_shards: Path) -> None:
    cfg = compose_run(f"data.root={tiny_shards}", "simt.only=[cls_object,foo]")
    with pytest.raises(ValueError, match=r"`simt.only` names unknown task 'foo'"):
        validate_run(cfg, 2)
    cfg = compose_run(f"data.root={tiny_shards}")
    cfg.simt.tasks["foo"] = TaskSection(type="classification", batch_size=8)
    with pytest.raises(ValueError, match=r"`simt.tasks.foo`: unknown task 'foo'"):
        validate_run(cfg, 2)


def test_unknown_task_type_names_key(compose_run: Compose, tiny_shards: Path) -> None:
    cfg = compose_run(f"data.root={tiny_shards}", "simt.tasks.det.type=detector")
    with pytest.raises(ValueError, match=r"`simt.tasks.det.type`='detector'"):
        validate_run(cfg, 2)


def test_ep_size_must_divide_world(compose_run: Compose, tiny_shards: Path) -> None:
    cfg = compose_run(f"data.root={tiny_shards}", "parallel.ep_size=2", "launcher.nproc=3")
    with pytest.raises(ValueError, match=r"`parallel.ep_size`=2 must divide the world size 3"):
        validate_run(cfg, 3)


def test_missing_shards_name_the_root(compose_run: Compose, tmp_path: Path) -> None:
    cfg = compose_run(f"data.root={tmp_path / 'nowhere'}")
    with pytest.raises(ValueError, match="`data.root`="):
        validate_run(cfg, 1)
