"""launcher=slurm: config keys, validation, and the sbatch command built from them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from gppf_dist.config.schema import LauncherSection, RunConfig
from gppf_dist.launch.registry import get_launcher, planned_world
from gppf_dist.launch.slurm import SBATCH_SCRIPT, job_environment, sbatch_command


def test_slurm_yaml_composes_with_cpu_defaults(compose_run: Callable[..., RunConfig]) -> None:
    cfg = compose_run("launcher=slurm", "launcher.nodes=3")
    launcher = get_launcher("slurm").check(cfg.launcher)
    assert (launcher.name, launcher.nodes, launcher.nnodes) == ("slurm", 3, 3)
    assert (launcher.gpus_per_node, launcher.nproc) == (0, 2)  # CPU nodes: nproc per node
    assert launcher.partition is None and launcher.time is None and launcher.account is None
    assert planned_world(cfg.launcher, None).size == 6


def test_gpus_per_node_sets_processes_per_node(compose_run: Callable[..., RunConfig]) -> None:
    cfg = compose_run("launcher=slurm", "launcher.gpus_per_node=8", "launcher.nproc=2")
    assert get_launcher("slurm").check(cfg.launcher).nproc == 8
    assert planned_world(cfg.launcher, None).size == 8


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "slurm", "nodes": 0}, "`launcher.nodes`=0"),
        ({"name": "slurm", "gpus_per_node": -1}, "`launcher.gpus_per_node`=-1"),
    ],
)
def test_bad_launcher_values_name_the_key(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        LauncherSection(**kwargs)  # type: ignore[arg-type]


def test_slurm_takes_no_options() -> None:
    section = LauncherSection(name="slurm", options={"qos": "high"})
    with pytest.raises(ValueError, match=r"`launcher.options.qos`='high' is not an option of "):
        get_launcher("slurm").check(section)


def test_sbatch_command_carries_the_resource_options(tmp_path: Path) -> None:
    launcher = LauncherSection(
        name="slurm",
        nodes=4,
        gpus_per_node=8,
        cpus_per_task=64,
        partition="gpu",
        time="24:00:00",
        account="vision",
        sbatch_args=["--qos=high"],
    )
    cmd = sbatch_command(launcher, tmp_path, "gppf-demo")
    assert cmd[:2] == ["sbatch", "--parsable"]
    for option in [
        "--job-name=gppf-demo",
        "--nodes=4",
        "--ntasks-per-node=1",
        "--gpus-per-node=8",
        "--cpus-per-task=64",
        "--partition=gpu",
        "--time=24:00:00",
        "--account=vision",
        f"--output={tmp_path.resolve() / 'slurm-%j.out'}",
        "--qos=high",
    ]:
        assert option in cmd, option
    assert "--wait" not in cmd


def test_cpu_job_leaves_cluster_defaults_and_names_the_config(tmp_path: Path) -> None:
    launcher = LauncherSection(name="slurm", wait=True)
    cmd = sbatch_command(launcher, tmp_path, "gppf-x")
    assert "--wait" in cmd
    assert not any(c.startswith(("--gpus", "--partition", "--time", "--account")) for c in cmd)
    env = job_environment(launcher, tmp_path / "config.yaml")
    assert env["GPPF_CONFIG"] == str((tmp_path / "config.yaml").resolve())
    assert env["NPROC_PER_NODE"] == "2"
    assert SBATCH_SCRIPT.is_file()
