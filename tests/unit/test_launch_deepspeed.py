"""launcher=deepspeed, pure parts: hostfiles, the world size they give, the launcher command,
the variables forwarded to every host."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gppf_dist.config.hostfile import Host, planned_hosts, read_hostfile
from gppf_dist.config.schema import LauncherSection
from gppf_dist.launch.deepspeed import (
    MULTI_HOST_PORT,
    deepspeed_command,
    forwarded_env,
    launch_environment,
)
from gppf_dist.launch.registry import planned_world

REPO = Path(__file__).resolve().parents[2]


def test_example_hostfile_is_this_machine_with_two_slots() -> None:
    assert read_hostfile(REPO / "launch" / "hostfile.example") == [Host("localhost", 2)]


def test_hostfile_with_comments_and_several_hosts(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text("# cluster\nnode001 slots=8  # first\n\nnode002 slots=4\n")
    assert read_hostfile(path) == [Host("node001", 8), Host("node002", 4)]
    world = planned_world(LauncherSection(name="deepspeed", hostfile=str(path)), None)
    assert (world.size, world.origin) == (12, f"the slots of {path}")


def test_without_hostfile_this_machine_runs_nproc_workers() -> None:
    launcher = LauncherSection(name="deepspeed", nproc=3)
    assert planned_hosts(launcher) == [Host("localhost", 3)]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("node001\n", "line 1: 'node001' is not '<hostname> slots=<n>'"),
        ("node001 slots=2\nnode002 slots=0\n", "line 2: 'node002 slots=0'"),
        ("node001 slots=2\nnode001 slots=2\n", "line 2: host 'node001' twice"),
        ("# nothing\n", "lists no hosts"),
    ],
)
def test_bad_hostfile_names_the_key_file_and_line(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "hosts"
    path.write_text(text)
    with pytest.raises(ValueError, match="`launcher.hostfile`") as err:
        read_hostfile(path)
    assert str(path) in str(err.value) and reason in str(err.value)


def test_missing_hostfile_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        read_hostfile(tmp_path / "nope")


def test_one_host_runs_without_ssh_and_workers_read_the_saved_config() -> None:
    launcher = LauncherSection(name="deepspeed")
    cmd = deepspeed_command(
        launcher, [Host("localhost", 2)], Path("h"), Path("run/config.yaml"), "py", 29500
    )
    assert cmd[:3] == ["py", "-m", "deepspeed.launcher.runner"]
    assert cmd[cmd.index("--master_addr") + 1] == "127.0.0.1"
    assert "--no_ssh" in cmd
    # a one-host hostfile naming another machine still runs here: the rendezvous stays local
    named = deepspeed_command(launcher, [Host("node007", 2)], Path("h"), Path("c"), "py", 1)
    assert (
        named[named.index("--master_addr") + 1] == "127.0.0.1"
        and cmd[cmd.index("--node_rank") + 1] == "0"
    )
    assert cmd[-4:] == ["--no_local_rank", "--module", "gppf_dist.cli.worker", "run/config.yaml"]


def test_several_hosts_go_through_pdsh_with_the_first_as_master() -> None:
    launcher = LauncherSection(name="deepspeed", hostfile="h")
    hosts = [Host("node001", 8), Host("node002", 8)]
    cmd = deepspeed_command(launcher, hosts, Path("h"), Path("c.yaml"), "py", 29500)
    assert "--no_ssh" not in cmd
    assert cmd[cmd.index("--master_addr") + 1] == "node001"
    launcher = LauncherSection(name="deepspeed", hostfile="h", master_addr="10.0.0.1")
    cmd = deepspeed_command(launcher, hosts, Path("h"), Path("c.yaml"), "py", 29500)
    assert cmd[cmd.index("--master_addr") + 1] == "10.0.0.1"


def test_forwarded_env_keeps_the_users_files_and_the_run_variables(tmp_path: Path) -> None:
    home, cwd = tmp_path / "home.env", tmp_path / "cwd.env"
    home.write_text("NCCL_SOCKET_IFNAME=ib0\n")
    cwd.write_text("NCCL_IB_DISABLE=1\n")
    environ = {"WANDB_PROJECT": "p", "HOME": "/root", "GPPF_X": "1", "PYTHONPATH": "/x"}
    lines = forwarded_env(environ, [home, tmp_path / "absent", cwd]).splitlines()
    assert lines == ["NCCL_SOCKET_IFNAME=ib0", "NCCL_IB_DISABLE=1", "GPPF_X=1", "WANDB_PROJECT=p"]


def test_several_hosts_get_a_private_env_file_without_local_defaults(tmp_path: Path) -> None:
    hosts = [Host("node001", 8), Host("node002", 8)]
    environ = {"WANDB_API_KEY": "secret", "PATH": "/bin"}
    env, port = launch_environment(hosts, tmp_path, environ, 0)
    env_file = Path(env["DS_ENV_FILE"])
    assert env_file.parent == tmp_path and port == MULTI_HOST_PORT
    assert env_file.stat().st_mode & 0o777 == 0o600  # W&B keys may be in it
    assert "WANDB_API_KEY=secret" in env_file.read_text().splitlines()
    assert "DS_ACCELERATOR" not in env  # this machine's hardware says nothing about the hosts'


def test_one_host_inherits_this_environment(tmp_path: Path) -> None:
    env, port = launch_environment([Host("localhost", 2)], tmp_path, {"WANDB_MODE": "x"}, 0)
    assert "DS_ENV_FILE" not in env and not list(tmp_path.iterdir())
    assert env["WANDB_MODE"] == "x"
    assert env.get("DS_ACCELERATOR") == (None if torch.cuda.is_available() else "cpu")
    assert port > 0
