"""`gppf-wandb workspace`: the panels show keys a run really logs, the `wandb_workspaces` object
matches them, and nothing here reaches W&B (sockets refuse to connect in every test).

The run's logs come from the worker's own code path: `step_record` of engine `StepResult`s,
written by `worker.log_step` (metrics.jsonl and the W&B run, the heatmap included) and the final
evaluation logged by `worker.finish`, with a recording stand-in for the W&B run."""

from __future__ import annotations

import json
import math
import socket
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from gppf_dist.cli import wandb_cli
from gppf_dist.config.load import save_run_config
from gppf_dist.config.schema import RunConfig
from gppf_dist.engine import worker
from gppf_dist.engine.step import StepResult
from gppf_dist.logging.metrics import MetricsFile, read_metrics
from gppf_dist.logging.record import ModelFlops, step_record
from gppf_dist.logging.run_keys import HEATMAP_KEY, STEP_METRIC, logged_keys, run_keys
from gppf_dist.logging.workspace import Section, build_workspace, workspace_sections
from gppf_dist.tasks.demo import DEMO_TASKS

TASKS = ["det", "pose", "seg"]
TYPES = {t: DEMO_TASKS[t][0] for t in TASKS}
WORLD = 2


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a test tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("WANDB_MODE", "disabled")


class RecordingRun:
    """A W&B run that keeps every key it is given (`wandb_run.Run`)."""

    id = "test"

    def __init__(self) -> None:
        self.keys: dict[str, None] = {}
        self.steps: list[int] = []

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self.keys.update(dict.fromkeys(metrics))
        self.steps.append(step)

    def log_heatmap(self, key: str, image: np.ndarray, step: int) -> None:
        assert image.ndim == 3
        self.keys[key] = None

    def finish(self) -> None:
        pass


FLOPS = ModelFlops({"det": 2.0, "pose": 1.0, "seg": 4.0}, world_peak_tflops=0.5)
"""Rank 0 of a run whose device peak is known: `model_tflops` and `mfu` in every step."""


def _result(step: int) -> StepResult:
    """Step 1 has no timings yet (they are the previous step's); step 3 is non-finite."""
    n = len(TASKS)
    timed = float(step > 1)
    return StepResult(
        task_loss_sums=torch.full((n,), 2.0, dtype=torch.float64),
        skipped=torch.zeros(n),
        dropped=torch.ones(n),
        task_seconds=torch.full((n,), 0.5 * timed, dtype=torch.float64),
        rank_busy_s=torch.tensor([0.7 * timed, 0.0], dtype=torch.float64),  # rank 1 idle
        stop=False,
        regularizer=1e-3,
        grad_norm=math.nan if step == 3 else 1.5,
        data_s=0.01,
    )


def _run(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, steps: int = 4, log_every: int = 1
) -> RecordingRun:
    """A run's logs through `worker.log_step` and `worker.finish`, rank 0 of two."""
    run, usage = RecordingRun(), torch.rand(len(TASKS), 2, 4)
    w = SimpleNamespace(
        metrics=MetricsFile(run_dir / "metrics.jsonl", resume_step=0),
        run=run,
        run_dir=run_dir,
        info=SimpleNamespace(is_main=True),
        cfg=SimpleNamespace(
            trainer=SimpleNamespace(log_every=log_every, max_steps=steps),
            logger=SimpleNamespace(heatmap_every=2),
        ),
        model=SimpleNamespace(lego_usage=lambda: usage),
        taskset=SimpleNamespace(names=TASKS),
        loaders=SimpleNamespace(close=lambda: None),
    )
    batch = {"det": 8, "pose": 8, "seg": 8}
    for done in range(1, steps + 1):
        record = step_record(done, _result(done), batch, dict.fromkeys(TASKS, 1.0), set(TASKS),
                             0.25, 1e-3, FLOPS)  # fmt: skip
        worker.log_step(w, done, record, done == steps)  # type: ignore[arg-type]
    w.metrics.close()
    final = {t: dict.fromkeys(m, 0.5) for t, m in wandb_cli.eval_metrics(TYPES).items()}
    monkeypatch.setattr(worker, "run_eval", lambda _: final)
    worker.finish(w, None)  # type: ignore[arg-type]
    return run


@pytest.fixture
def logged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, RecordingRun]:
    return tmp_path / "metrics.jsonl", _run(tmp_path, monkeypatch)


def test_the_last_step_is_logged_whatever_log_every(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _run(tmp_path, monkeypatch, steps=7, log_every=3)
    steps = [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")]
    assert steps == [3, 6, 7]
    assert run.steps[:3] == [3, 6, 7]  # W&B too (the final evaluation follows)


def test_mfu_is_the_steps_model_flops_over_the_worlds_peak(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _run(tmp_path, monkeypatch, steps=2)
    record = read_metrics(tmp_path / "metrics.jsonl")[-1]
    gflop = 8 * 2.0 + 8 * 1.0 + 8 * 4.0  # batch 8 of each task, GFLOP per sample
    assert math.isclose(record["model_tflops"], gflop / 0.25 / 1e3)  # over a 0.25 s step
    assert math.isclose(record["mfu"], record["model_tflops"] / 0.5)


def _panels(sections: list[Section]) -> list[Any]:
    return [p for s in sections for p in s.panels]


def test_every_panel_shows_keys_the_run_logged(logged: tuple[Path, RecordingRun]) -> None:
    path, run = logged
    file_keys = logged_keys(path)
    assert set(file_keys) <= set(run.keys)  # W&B gets every metrics.jsonl key
    sections = workspace_sections(run.keys, TASKS)
    shown = {k for p in _panels(sections) for k in p.keys}
    assert shown <= set(run.keys)
    assert set(run.keys) - shown == {"step"}, "only the step number (W&B's x axis) goes unshown"
    assert {f"busy_s/rank{r}" for r in range(WORLD)} <= shown
    titles = {p.title: p for p in _panels(sections)}
    for task in TASKS:
        assert titles[f"loss/{task}"].keys == (f"loss/{task}",)
        assert titles[f"eval/{task}"].kind == "bar"
    heatmap = [p for p in _panels(sections) if p.kind == "media"]
    assert [p.keys for p in heatmap] == [(HEATMAP_KEY,)]


def test_the_expected_keys_are_the_ones_the_worker_logs(
    logged: tuple[Path, RecordingRun],
) -> None:
    path, run = logged
    expected = run_keys(wandb_cli.eval_metrics(TYPES))
    assert set(expected.all()) <= set(run.keys)
    assert set(run.keys) - set(expected.all()) == {"busy_s/rank1"}  # expected: one rank
    assert set(expected.occasional) == {f"nonfinite/{t}" for t in TASKS} | {"model_tflops", "mfu"}
    keys, missing = expected.restrict(logged_keys(path))
    assert missing == [] and set(keys) == set(run.keys)
    first_step_only = logged_keys(path)
    keys, missing = expected.restrict(k for k in first_step_only if not k.startswith("cost_ms/"))
    assert missing == [f"cost_ms/{t}" for t in TASKS]


def test_the_workspace_object_matches_the_sections(logged: tuple[Path, RecordingRun]) -> None:
    import wandb_workspaces.reports.v2 as wr

    sections = workspace_sections(logged[1].keys, TASKS)
    workspace = build_workspace("team", "proj", sections, name="watch")
    assert (workspace.entity, workspace.project, workspace.name) == ("team", "proj", "watch")
    assert workspace.settings.x_axis == STEP_METRIC
    assert [s.name for s in workspace.sections] == [s.name for s in sections]
    kinds = {"line": wr.LinePlot, "bar": wr.BarPlot, "media": wr.MediaBrowser}
    for ours, theirs in zip(sections, workspace.sections, strict=True):
        assert len(ours.panels) == len(theirs.panels)
        for panel, built in zip(ours.panels, theirs.panels, strict=True):
            assert isinstance(built, kinds[panel.kind]) and built.title == panel.title
            if panel.kind == "line":
                assert built.x == STEP_METRIC and built.y == list(panel.keys)
                assert built.metric_regex == (panel.regex or None)
            elif panel.kind == "bar":
                assert built.metrics == list(panel.keys)
            else:
                assert built.media_keys == list(panel.keys)
    spec = workspace._to_model().spec.model_dump(by_alias=True, exclude_none=True)
    assert HEATMAP_KEY in json.dumps(spec)  # the saved form is built offline


def test_a_torn_last_line_is_passed_over(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    assert logged_keys(path) == ["step", "loss"]


def _run_dir(
    tmp_path: Path, compose_run: Callable[..., RunConfig], monkeypatch: pytest.MonkeyPatch
) -> Path:
    run_dir = tmp_path / "run"
    cfg = compose_run("experiment=demo", f"run.dir={run_dir}", f"simt.only=[{','.join(TASKS)}]")
    save_run_config(cfg, run_dir / "config.yaml")
    _run(run_dir, monkeypatch)
    return run_dir


def test_dry_run_prints_the_run_s_panels(
    tmp_path: Path,
    compose_run: Callable[..., RunConfig],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_dir = _run_dir(tmp_path, compose_run, monkeypatch)
    args = ["workspace", "--entity", "team", "--project", "proj", "--run-dir", str(run_dir)]
    assert wandb_cli.main([*args, "--dry-run"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["x_axis"] == STEP_METRIC and out["name"] == wandb_cli.DEFAULT_NAME
    keys = {k for s in out["sections"] for p in s["panels"] for k in p["keys"]}
    assert "loss/det" in keys and "loss/cls_object" not in keys  # the run's tasks only
    assert "busy_s/rank1" in keys  # what the file holds
    assert wandb_cli.main([*args, "--tasks", "seg", "--name", "seg only", "--dry-run"]) == 0
    out = json.loads(capsys.readouterr().out)
    keys = {k for s in out["sections"] for p in s["panels"] for k in p["keys"]}
    assert out["name"] == "seg only" and "loss/seg" in keys and "loss/det" not in keys


def test_dry_run_without_a_run_dir_covers_the_8_tasks(capsys: pytest.CaptureFixture[str]) -> None:
    assert wandb_cli.main(["workspace", "--entity", "e", "--project", "p", "--dry-run"]) == 0
    out = json.loads(capsys.readouterr().out)
    titles = {p["title"] for s in out["sections"] for p in s["panels"]}
    assert {f"loss/{t}" for t in DEMO_TASKS} <= titles
    assert {f"eval/{t}" for t in DEMO_TASKS} <= titles


def test_missing_keys_are_named(
    tmp_path: Path,
    compose_run: Callable[..., RunConfig],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_dir = _run_dir(tmp_path, compose_run, monkeypatch)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    (run_dir / "metrics.jsonl").write_text(lines[0] + "\n")  # step 1: no timings yet
    args = ["workspace", "--entity", "e", "--project", "p", "--run-dir", str(run_dir)]
    assert wandb_cli.main([*args, "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert "cost_ms/det" in captured.err and "cost_ms/det" not in captured.out


@pytest.mark.parametrize("tasks", ["det,,seg", "det,det", "det,nope"])
def test_bad_tasks_are_refused(tasks: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["workspace", "--entity", "e", "--project", "p", "--tasks", tasks, "--dry-run"]
    assert wandb_cli.main(args) == 2
    err = capsys.readouterr().err
    assert "--tasks" in err and repr(tasks) in err


def test_a_missing_run_dir_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-such-run"
    args = ["workspace", "--entity", "e", "--project", "p", "--run-dir", str(missing)]
    assert wandb_cli.main(args) == 2
    assert str(missing) in capsys.readouterr().err
    missing.mkdir()
    assert wandb_cli.main(args) == 2
    assert "config.yaml" in capsys.readouterr().err


def test_a_failed_save_is_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Unsaved:
        def save(self) -> None:
            raise RuntimeError("No API key configured.\nsecond line")

    monkeypatch.setattr(wandb_cli, "build_workspace", lambda *a, **k: Unsaved())
    assert wandb_cli.main(["workspace", "--entity", "e", "--project", "p"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "No API key configured." in captured.err
    assert "Traceback" not in captured.err
