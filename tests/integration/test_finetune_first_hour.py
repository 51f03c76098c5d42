"""What a user of `gppf-finetune` meets first, as with `gppf-train`: a misspelled key refused at
once with the nearest known one (exit 2); the first line within the bound `test_startup.py` sets
for gppf-train; Ctrl-C during a real fine-tune (scratch mode on a tiny synthetic downstream root)
ends with the step reached and the gppf-finetune command that resumes (exit 130), no traceback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
FINETUNE = str(BIN / "gppf-finetune")
TASK = "count"
NOISE = ("Traceback", "KeyboardInterrupt", "Error executing job", "SignalException")


@pytest.fixture(scope="module")
def downstream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One task of the synthetic downstream suite, 32 training and 16 test images."""
    out = tmp_path_factory.mktemp("downstream") / "root"
    cmd = [str(BIN / "gppf-shards"), "synth-downstream", "--out", str(out),
           "--train-per-task", "32", "--test-per-task", "16", "--tasks", TASK]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def scratch_cmd(run_dir: Path, root: Path, *overrides: str) -> list[str]:
    """A from-scratch fine-tune (no export to build first), at the smallest sizes that train."""
    return [
        FINETUNE, "finetune.pretrained=none", "model=gppf_r50_tiny", "finetune.route=random",
        f"finetune.task={TASK}", f"data.root={root}", f"run.dir={run_dir}", "logger=none",
        "trainer.progress=false", "trainer.eval_at_start=false", "launcher.nproc=1",
        "finetune.batch_size=8", "finetune.input_size=[32,32]", *overrides,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("finetune.pretraind=x", "did you mean `finetune.pretrained`?"),
        ("model=gppf_r50_tny", "did you mean 'gppf_r50_tiny'?"),
        ("simt.tasks.count.batch_size=8", "is not used by gppf-finetune"),
    ],
)
def test_a_misspelled_key_is_refused_at_once(tmp_path: Path, override: str, message: str) -> None:
    started = time.monotonic()
    proc = subprocess.run(
        [FINETUNE, f"run.dir={tmp_path / 'run'}", override],
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.monotonic() - started
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert message in proc.stderr and "gppf-finetune: configuration error" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert took < 15, f"refused after {took:.1f}s"
    assert not (tmp_path / "run").exists()


def test_first_line_within_3s(tmp_path: Path) -> None:
    """Measured as `test_startup.py` measures gppf-train's. Valid finetune keys pass the check
    before Hydra; the run then stops on the missing data root (exit 2, no workers)."""
    cmd = scratch_cmd(tmp_path / "run", tmp_path / "missing")
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    first_s = time.monotonic() - started
    rest = proc.stdout.read()
    assert proc.wait(timeout=120) == 2, rest[-3000:]
    assert first.startswith("gppf-finetune: checking the configuration (finetune."), first
    assert first_s < 3.0, f"first line after {first_s:.2f}s"
    assert "cannot read manifest" in rest and "Traceback" not in rest, rest[-3000:]


def test_ctrl_c_says_how_to_resume_and_exits_130(tmp_path: Path, downstream: Path) -> None:
    run_dir, log = tmp_path / "run", tmp_path / "out.txt"
    cmd = scratch_cmd(run_dir, downstream, "trainer.max_steps=10000", "trainer.checkpoint_every=2")
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if metrics.is_file() and metrics.stat().st_size:
            break  # training: a step is recorded
        time.sleep(0.2)
    assert proc.poll() is None and metrics.is_file(), log.read_text()[-3000:]
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: to the whole process group
    code = proc.wait(timeout=120)
    text = log.read_text()
    assert code == 130, text[-3000:]
    assert not any(n in text for n in NOISE), text[-3000:]
    assert text.startswith("gppf-finetune: checking the configuration"), text[:300]
    assert "stopped after step" in text, text[-3000:]
    resume = next(line for line in text.splitlines() if line.startswith("resume with: "))
    assert resume.split()[2] == FINETUNE, resume
    assert f"run.dir={run_dir}" in resume and f"finetune.task={TASK}" in resume, resume
