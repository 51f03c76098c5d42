"""Every `gppf-*` console script answers `--help` (and `-h`) with exit status 0, naming itself and
showing an example; so does each subcommand of the argparse tools."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from gppf_dist.cli import bench, ckpt, export, extract, model, shards

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])
BIN = Path(sys.executable).parent


def shows_example(text: str) -> bool:
    return "example" in text.lower()


def test_every_gppf_script_is_checked() -> None:
    assert len(SCRIPTS) >= 8 and all(name.startswith("gppf-") for name in SCRIPTS)
    assert {"gppf-train", "gppf-finetune", "gppf-extract", "gppf-bench"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_names_the_tool_and_shows_an_example(script: str) -> None:
    proc = subprocess.run(
        [str(BIN / script), "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert script in proc.stdout, proc.stdout
    assert shows_example(proc.stdout), proc.stdout
    # an example line runs the tool itself
    assert any(line.strip().startswith(script + " ") for line in proc.stdout.splitlines())


MAINS: dict[str, Callable[[list[str]], object]] = {
    "gppf-model": model.main,
    "gppf-extract": extract.main,
    "gppf-export": export.main,
    "gppf-bench": bench.main,
    "gppf-shards": shards.main,
    "gppf-ckpt": ckpt.main,
}


def _help(main: Callable[[list[str]], object], args: list[str]) -> None:
    """Run a CLI's main; argparse leaves `--help` with SystemExit(0), the others return."""
    try:
        main(args)
    except SystemExit as stop:
        assert stop.code in (0, None), stop.code


@pytest.mark.parametrize("script", sorted(MAINS))
def test_short_flag_is_help_too(script: str, capsys: pytest.CaptureFixture[str]) -> None:
    _help(MAINS[script], ["-h"])
    out = capsys.readouterr().out
    assert script in out and shows_example(out)


@pytest.mark.parametrize(
    ("script", "command"),
    [("gppf-shards", c) for c in shards.build_parser()._subparsers._group_actions[0].choices]  # type: ignore[union-attr]
    + [("gppf-bench", c) for c in bench.BENCHES]
    + [("gppf-ckpt", "verify"), ("gppf-model", "summary")],
)
def test_each_subcommand_lists_its_flags_and_an_example(
    script: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _help(MAINS[script], [command, "--help"])
    out = capsys.readouterr().out
    assert f"{script} {command}" in out, out
    assert shows_example(out), out
    if script != "gppf-model":  # argparse: the flags, one of them --help itself
        assert "-h, --help" in out


def test_key_value_tools_point_to_help_on_a_bad_argument() -> None:
    with pytest.raises(SystemExit, match="--help for an example"):
        extract.main(["--run-dir", "runs/demo"])
    with pytest.raises(SystemExit, match="--help for an example"):
        export.main(["runs/demo"])
