"""A launcher of your own is one file: `tests/plugins/toy_launcher.py`, named in `plugins=[...]`
and picked with `launcher.name=subprocesses`, trains the demo through gppf-train with no other
file of the project changed; a launcher name or option nobody registered stops gppf-train with
status 2 before any worker starts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from gppf_dist.logging.metrics import read_metrics

from .test_train_cli import run_train, train_cmd

TOY = Path(__file__).resolve().parents[1] / "plugins" / "toy_launcher.py"


def test_a_launcher_from_one_plugin_file_trains_the_demo(tmp_path: Path, tiny_shards: Path) -> None:
    run_dir = tmp_path / "run"
    proc = run_train(
        run_dir,
        tiny_shards,
        f"plugins=[{TOY}]",
        "launcher.name=subprocesses",
        "launcher.nproc=2",
        "launcher.options.banner=toy launcher",
        "trainer.max_steps=2",
        "trainer.eval_at_start=false",
    )
    assert "toy launcher: gppf-train starts 2 worker processes" in proc.stdout  # it ran
    assert "(launcher=local)" not in proc.stdout
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [1, 2]
    assert "cls_object" in proc.stdout  # the closing per-task table
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["plugins"] == [str(TOY)]
    assert saved["launcher"]["name"] == "subprocesses"
    assert saved["launcher"]["options"] == {"banner": "toy launcher"}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["launcher.name=pbs"],
            "`launcher`='pbs' is not a launcher. Known: deepspeed, local, none, slurm",
        ),
        (
            [f"plugins=[{TOY}]", "launcher.name=subprocess"],
            "`launcher`='subprocess' is not a launcher; did you mean 'subprocesses'? Known: "
            "deepspeed, local, none, slurm, subprocesses",
        ),
        (
            [f"plugins=[{TOY}]", "launcher.name=subprocesses", "launcher.options.baner=x"],
            "`launcher.options.baner`='x' is not an option of launcher=subprocesses; did you "
            "mean `banner`?",
        ),
        (
            ["launcher.options.banner=x"],
            "`launcher.options.banner`='x' is not an option of launcher=local: it takes no options",
        ),
    ],
)
def test_an_unknown_launcher_or_option_stops_before_any_worker(
    tmp_path: Path, tiny_shards: Path, overrides: list[str], message: str
) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        train_cmd(run_dir, tiny_shards, *overrides), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert f"gppf-train: configuration error: {message}" in proc.stderr
    assert not (run_dir / "config.yaml").exists()  # nothing started
