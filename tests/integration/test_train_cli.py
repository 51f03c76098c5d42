"""`gppf-train` end to end: real Hydra, elastic agent, gloo, DeepSpeed, shards, checkpoints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gppf_dist.checkpoint.layout import (
    COMPLETE,
    DEEPSPEED_MODULE_FILE,
    checkpoints_dir,
    tag_for_step,
)
from gppf_dist.logging.metrics import read_metrics

TRAIN = str(Path(sys.executable).parent / "gppf-train")
TASKS = ["attr", "cls_object", "cls_scene", "det", "face", "pose", "reid", "seg"]


def train_cmd(run_dir: Path, shards: Path, *overrides: str) -> list[str]:
    return [
        TRAIN,
        "experiment=demo",
        f"run.dir={run_dir}",
        f"data.root={shards}",
        "logger=none",
        "trainer.progress=false",
        "trainer.eval_batch_size=16",
        *overrides,
    ]


def run_train(run_dir: Path, shards: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        train_cmd(run_dir, shards, *overrides), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl")]


@pytest.mark.parametrize("nproc", [1, 2])
def test_train_completes_and_leaves_a_run_dir(
    tmp_path: Path, tiny_shards: Path, nproc: int
) -> None:
    run_dir = tmp_path / "run"
    proc = run_train(
        run_dir,
        tiny_shards,
        f"launcher.nproc={nproc}",
        "trainer.max_steps=3",
        "trainer.log_every=2",  # and the last step
        "trainer.peak_tflops=0.5",  # a peak: rank 0 counts the model's FLOPs and logs MFU
    )
    records = read_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [2, 3]
    for key in ["loss", "lr", "samples_per_s", "mfu", *[f"loss/{t}" for t in TASKS]]:
        assert all(key in r for r in records), key
    assert all(r["mfu"] == pytest.approx(r["model_tflops"] / (0.5 * nproc)) for r in records)
    assert "training GFLOP per sample: " in proc.stdout
    assert (run_dir / "config.yaml").is_file()
    tag = checkpoints_dir(run_dir) / tag_for_step(3)
    assert (tag / COMPLETE).is_file()
    assert (tag / DEEPSPEED_MODULE_FILE).is_file()  # the name tools read without an engine
    evals = json.loads((run_dir / "eval.json").read_text())
    assert sorted(evals["tasks"]) == TASKS and sorted(evals["start"]) == TASKS
    assert "cls_object" in proc.stdout  # the closing per-task table


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("parallel.ep_size=2", "`parallel.ep_size`=2 must divide the world size 3"),
        ("simt.only=[cls_object,foo]", "`simt.only` names unknown task 'foo'"),
        ("trainer.max_step=5", "max_step"),
    ],
)
def test_bad_config_fails_before_any_worker(
    tmp_path: Path, tiny_shards: Path, override: str, message: str
) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        train_cmd(run_dir, tiny_shards, "launcher.nproc=3", override),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout
    assert not (run_dir / "config.yaml").exists()  # nothing started


def test_interrupted_run_resumes_from_last_checkpoint(tmp_path: Path, tiny_shards: Path) -> None:
    run_dir = tmp_path / "run"
    args = (
        "launcher.nproc=2",
        "trainer.max_steps=20",
        "trainer.checkpoint_every=2",
        "trainer.eval_at_start=false",
    )
    proc = subprocess.Popen(
        train_cmd(run_dir, tiny_shards, *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    ckpt = run_dir / "checkpoints" / "step_00000004" / "COMPLETE"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert ckpt.exists(), "no checkpoint appeared"
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C, as a user would
    proc.communicate(timeout=120)
    done_before = max(r["step"] for r in read_metrics(run_dir / "metrics.jsonl"))
    assert done_before < 20, "the run finished before it could be interrupted"

    second = run_train(run_dir, tiny_shards, *args)
    assert "resuming from checkpoint at step" in second.stdout
    steps = [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")]
    assert steps == list(range(1, 21))  # no step lost or repeated


def test_launcher_none_under_torchrun(tmp_path: Path, tiny_shards: Path) -> None:
    """torchrun starts the processes; each runs gppf-train launcher=none in-process."""
    run_dir = tmp_path / "run"
    torchrun = str(Path(sys.executable).parent / "torchrun")
    cmd = [torchrun, "--standalone", "--nproc-per-node", "2", "-m", "gppf_dist.cli.train"]
    cmd += train_cmd(run_dir, tiny_shards, "launcher=none", "trainer.max_steps=2")[1:]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [1, 2]
    saved = (run_dir / "config.yaml").read_text()
    assert "name: none" in saved
