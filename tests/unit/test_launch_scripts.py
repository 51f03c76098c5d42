"""The launch scripts parse (bash -n), pass shellcheck where it is installed, and carry the
Slurm directives that preemption and requeue depend on."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

LAUNCH = Path(__file__).resolve().parents[2] / "launch"
SCRIPTS = [
    LAUNCH / "torchrun.sh",
    LAUNCH / "deepspeed.sh",
    LAUNCH / "slurm" / "gppf.sbatch",
    LAUNCH / "slurm" / "local_cluster.sh",
    LAUNCH / "local_ssh.sh",
]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses(script: Path) -> None:
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shellcheck_is_clean() -> None:
    proc = subprocess.run(["shellcheck", *map(str, SCRIPTS)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_sbatch_directives_for_preemption() -> None:
    text = (LAUNCH / "slurm" / "gppf.sbatch").read_text()
    for directive in ["--requeue", "--signal=B:USR1@120", "--ntasks-per-node=1", "--nodes="]:
        assert f"#SBATCH {directive}" in text, directive
    assert '--rdzv-id="$SLURM_JOB_ID"' in text and "--rdzv-backend=c10d" in text
    assert "slurm-$SLURM_JOB_ID" in text  # run dir keyed by the job id
    assert "scontrol requeue" in text and "launcher=none" in text


def test_deepspeed_script_guards_hydra_and_env() -> None:
    text = (LAUNCH / "deepspeed.sh").read_text()
    assert "--no_local_rank" in text and "DS_ENV_FILE" in text
    assert "WANDB_" in text and "HYDRA_" in text
    assert "slots=" in (LAUNCH / "hostfile.example").read_text()
