"""The launcher registry: built-ins and plugins behind one protocol; gppf-train picks, checks,
plans and launches through it (`cli/train.py`), and refuses an unknown name or option before
any worker starts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gppf_dist.cli.start import force_open_keys
from gppf_dist.cli.train import prepare, train
from gppf_dist.config.schema import LauncherSection, RunConfig
from gppf_dist.launch import registry
from gppf_dist.launch.base import (
    Launcher,
    Outcome,
    WorkersFailedError,
    World,
    launcher_options,
)
from gppf_dist.launch.registry import get_launcher, planned_world, register_launcher

Compose = Callable[..., RunConfig]


class FakeLauncher:
    """Records its calls; `launch` returns `outcome` or raises `error`."""

    def __init__(
        self, name: str, outcome: Outcome = Outcome.FINISHED, error: Exception | None = None
    ) -> None:
        self.name = name
        self.outcome = outcome
        self.error = error
        self.launched: list[tuple[Path, str]] = []

    def check(self, section: LauncherSection) -> LauncherSection:
        launcher_options(section, {"flavour": "plain"})
        return section

    def world(self, section: LauncherSection, env_world_size: int | None) -> World:
        return World(section.nproc, f"launcher.nproc={section.nproc}", here=True)

    def launch(
        self,
        cfg: RunConfig,
        config_path: Path,
        *,
        tool: str,
        worker: Callable[[RunConfig], None],
    ) -> Outcome:
        self.launched.append((config_path, tool))
        if self.error is not None:
            raise self.error
        return self.outcome


@pytest.fixture(autouse=True)
def own_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Launchers registered by a test are gone after it."""
    monkeypatch.setattr(registry, "_LAUNCHERS", dict(registry._LAUNCHERS))
    yield


def test_the_built_in_launchers_are_registered_and_are_launchers() -> None:
    assert registry.known_launchers() == ["deepspeed", "local", "none", "slurm"]
    for name in registry.known_launchers():
        launcher = get_launcher(name)
        assert isinstance(launcher, Launcher) and launcher.name == name


def test_an_unknown_name_names_the_key_the_nearest_and_every_known_one() -> None:
    with pytest.raises(ValueError) as err:
        get_launcher("locl")
    message = str(err.value)
    assert message.startswith("`launcher`='locl' is not a launcher; did you mean 'local'?")
    assert "Known: deepspeed, local, none, slurm" in message and "plugins=[" in message


def test_a_registered_launcher_is_picked_by_its_name() -> None:
    fake = FakeLauncher("toy")
    register_launcher(fake)
    assert get_launcher("toy") is fake
    assert "toy" in registry.known_launchers()
    world = planned_world(LauncherSection(name="toy", nproc=3), None)
    assert (world.size, world.origin, world.here) == (3, "launcher.nproc=3", True)


def test_a_taken_name_is_refused() -> None:
    register_launcher(FakeLauncher("toy"))
    with pytest.raises(ValueError, match="launcher 'toy' is registered already"):
        register_launcher(FakeLauncher("toy"))
    with pytest.raises(ValueError, match="launcher 'local' is registered already"):
        register_launcher(FakeLauncher("local"))
    assert get_launcher("local").__class__.__name__ == "LocalLauncher"  # the built-in stays


def test_what_is_not_a_launcher_is_refused() -> None:
    class NoLaunch:
        name = "half"

        def check(self, section: LauncherSection) -> LauncherSection:
            return section

    with pytest.raises(TypeError, match="needs `name`, `check`, `world` and `launch`"):
        register_launcher(NoLaunch())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty string"):
        register_launcher(FakeLauncher(""))


def test_options_are_the_launchers_own_keys() -> None:
    section = LauncherSection(name="toy", options={"flavour": "spicy"})
    assert launcher_options(section, {"flavour": "plain", "size": 1}) == {
        "flavour": "spicy",
        "size": 1,
    }
    bad = LauncherSection(name="toy", options={"flavor": "x"})
    with pytest.raises(ValueError, match=r"`launcher.options.flavor`='x' .* mean `flavour`\?"):
        launcher_options(bad, {"flavour": "plain"})
    with pytest.raises(ValueError, match="launcher=local: it takes no options"):
        get_launcher("local").check(LauncherSection(name="local", options={"a": 1}))


def test_launcher_options_compose_from_the_command_line(compose_run: Compose) -> None:
    cfg = compose_run(*force_open_keys(["launcher.options.flavour=spicy", "launcher.nproc=3"]))
    assert cfg.launcher.options == {"flavour": "spicy"} and cfg.launcher.nproc == 3
    assert force_open_keys(["+launcher.options.a=1", "launcher.nproc=2"]) == [
        "+launcher.options.a=1",
        "launcher.nproc=2",
    ]


def test_the_built_in_worlds() -> None:
    local = planned_world(LauncherSection(name="local", nproc=3, nnodes=2), None)
    assert (local.size, local.here) == (6, True)
    assert local.origin == "launcher.nproc=3 x launcher.nnodes=2"
    none = planned_world(LauncherSection(name="none"), 4)
    assert (none.size, none.origin, none.here) == (4, "the launcher's WORLD_SIZE", True)
    assert planned_world(LauncherSection(name="none"), None).size == 1
    slurm = planned_world(LauncherSection(name="slurm", nodes=2, gpus_per_node=4), None)
    assert (slurm.size, slurm.here) == (8, False)
    deepspeed = planned_world(LauncherSection(name="deepspeed", nproc=3), None)
    assert (deepspeed.size, deepspeed.origin) == (3, "the slots of launcher.nproc=3")


def test_an_unknown_launcher_is_refused_before_anything_is_written(
    compose_run: Compose, tmp_path: Path
) -> None:
    cfg = compose_run("launcher.name=pbs", f"run.dir={tmp_path / 'run'}")
    with pytest.raises(ValueError, match=r"`launcher`='pbs' is not a launcher\. Known: "):
        prepare(cfg)
    assert not (tmp_path / "run").exists()


def test_the_plan_is_checked_against_the_chosen_launchers_world(
    compose_run: Compose, tiny_shards: Path, tmp_path: Path
) -> None:
    register_launcher(FakeLauncher("toy"))
    cfg = compose_run(
        "launcher.name=toy",
        "launcher.nproc=3",
        "parallel.ep_size=2",
        f"data.root={tiny_shards}",
        f"run.dir={tmp_path / 'run'}",
    )
    with pytest.raises(ValueError, match=r"divide the world size 3 \(launcher.nproc=3\)"):
        prepare(cfg)


def test_train_dispatches_through_the_registry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = RunConfig()
    cfg.run.dir = str(tmp_path)
    finished, submitted = FakeLauncher("finished"), FakeLauncher("queued", Outcome.SUBMITTED)
    register_launcher(finished)
    register_launcher(submitted)
    after: list[str] = []

    cfg.launcher = LauncherSection(name="finished")
    train(cfg, tmp_path / "config.yaml", after=lambda: after.append("x"), tool="gppf-x")
    assert finished.launched == [(tmp_path / "config.yaml", "gppf-x")] and after == ["x"]
    assert f"no metrics in {tmp_path}" in capsys.readouterr().out  # the closing table

    cfg.launcher = LauncherSection(name="queued")
    train(cfg, tmp_path / "config.yaml", after=lambda: after.append("y"))
    assert submitted.launched and after == ["x"]  # the job reports in its own log
    assert capsys.readouterr().out == ""


def test_a_failed_launch_exits_1_with_its_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    register_launcher(FakeLauncher("broken", error=WorkersFailedError("rank 1 died")))
    cfg = RunConfig()
    cfg.run.dir = str(tmp_path)
    cfg.launcher = LauncherSection(name="broken")
    with pytest.raises(SystemExit) as exit_:
        train(cfg, tmp_path / "config.yaml", tool="gppf-x")
    assert exit_.value.code == 1
    assert "gppf-x: rank 1 died" in capsys.readouterr().err
