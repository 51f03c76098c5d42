"""Keys and names the schema does not know are refused with the nearest known one, with or
without `+`; a task can be added from the command line. Through the real conf/ tree, and through
the real `gppf-train`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gppf_dist.config.schema import RunConfig, TaskSection
from gppf_dist.config.suggest import (
    check_group_choices,
    check_only_names,
    check_override_keys,
    nearest,
)

TRAIN = str(Path(sys.executable).parent / "gppf-train")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+trainer.max_step=20", "`trainer.max_step`=20 is not a configuration key; "
         "did you mean `trainer.max_steps`?"),
        ("+data.streams_per_tsk=2", "did you mean `data.streams_per_task`?"),
        ("+trainr.seed=1", "did you mean `trainer`?"),
        ("+simt.tasks.colors={type:classification,batchsize:16}",
         "`simt.tasks.colors.batchsize`=16 is not a configuration key; "
         "did you mean `simt.tasks.colors.batch_size`?"),
    ],
)  # fmt: skip
def test_unknown_key_is_refused_with_the_nearest(
    compose_run: Callable[..., RunConfig], override: str, message: str
) -> None:
    with pytest.raises(ValueError) as err:
        compose_run("experiment=demo", override)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "overrides",
    [
        ("+simt.tasks.colors={type:classification,batch_size:16,input_size:[64,64]}",),
        ("+simt.tasks.colors.type=classification", "+simt.tasks.colors.input_size=[64,64]"),
    ],
)
def test_a_task_is_added_from_the_command_line(
    compose_run: Callable[..., RunConfig], overrides: tuple[str, ...]
) -> None:
    cfg = compose_run("experiment=demo", *overrides, "simt.only=[colors]")
    assert cfg.simt.tasks["colors"] == TaskSection(
        type="classification", batch_size=16, input_size=[64, 64]
    )
    assert list(cfg.simt.active_tasks()) == ["colors"]
    assert "cls_object" in cfg.simt.tasks  # the demo's tasks are still there


def test_an_added_task_without_a_type_is_refused(compose_run: Callable[..., RunConfig]) -> None:
    with pytest.raises(ValueError, match="type"):
        compose_run("+simt.tasks.colors={batch_size:16}")


def test_misspelled_task_in_only_gets_the_nearest(compose_run: Callable[..., RunConfig]) -> None:
    cfg = compose_run("experiment=demo", "simt.only=[cls_objet]")
    with pytest.raises(ValueError) as err:
        check_only_names(cfg.simt.only, cfg.simt.tasks)
    assert "`simt.only` names unknown task 'cls_objet'; did you mean 'cls_object'?" in str(
        err.value
    )


def test_nearest_only_for_likely_typos() -> None:
    assert nearest("max_step", ["max_steps", "seed"]) == "max_steps"
    assert nearest("foo", ["cls_object", "det"]) is None


def test_gppf_train_refuses_an_added_misspelled_key(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cmd = [TRAIN, "experiment=demo", f"run.dir={run_dir}", "logger=none", "+trainer.max_step=20"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "did you mean `trainer.max_steps`" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (run_dir / "config.yaml").exists()


def test_misspelled_group_option_gets_the_nearest(tmp_path: Path) -> None:
    from gppf_dist.cli.train import CONF_DIR

    with pytest.raises(ValueError, match=r"`model`='gppf_r5' .*did you mean 'gppf_r50'\?"):
        check_group_choices(["experiment=demo", "model=gppf_r5"], CONF_DIR)
    check_group_choices(["experiment=demo", "model=gppf_r50", "experiment=null"], CONF_DIR)
    cmd = [TRAIN, "experiment=dmeo", f"run.dir={tmp_path / 'run'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "did you mean 'demo'?" in proc.stderr


def test_misspelled_finetune_task_gets_the_nearest(
    compose_run: Callable[..., RunConfig], tiny_shards: Path
) -> None:
    from gppf_dist.cli.finetune import resolve

    cfg = compose_run(f"data.root={tiny_shards}", "finetune.task=cls_objet")
    with pytest.raises(
        ValueError, match=r"`finetune.task`='cls_objet' .*did you mean 'cls_object'"
    ):
        resolve(cfg)


def test_misspelled_key_without_plus_gets_the_nearest() -> None:
    with pytest.raises(
        ValueError, match=r"`trainer.max_step`='5' .*did you mean `trainer.max_steps`"
    ):
        check_override_keys(["experiment=demo", "trainer.max_step=5"], RunConfig)
    check_override_keys(
        ["model=gppf_r50", "simt.tasks.det.weight=2", "+simt.tasks.x.type=classification",
         "hydra.run.dir=x", "hydra/job_logging=none", "~logger", "--config-dir=my_conf",
         "trainer.max_steps=3"],
        RunConfig,
    )  # fmt: skip
