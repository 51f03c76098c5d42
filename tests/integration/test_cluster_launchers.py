"""Launching end to end: the ready-made scripts (DeepSpeed with a localhost hostfile, torchrun)
and gppf-train's own launcher=deepspeed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gppf_dist.logging.metrics import read_metrics

REPO = Path(__file__).resolve().parents[2]
COMMON = ("logger=none", "trainer.progress=false", "trainer.eval_batch_size=16")


def run_script(script: str, tmp_path: Path, env: dict[str, str], *overrides: str) -> str:
    cmd = [str(REPO / "launch" / script), "experiment=demo", *COMMON, *overrides]
    full_env = {**os.environ, "GPPF_PYTHON": sys.executable, **env}
    proc = subprocess.run(
        cmd, cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=900
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    return out


def test_deepspeed_launcher_with_localhost_hostfile(tmp_path: Path, tiny_shards: Path) -> None:
    run_dir = tmp_path / "run"
    env_file = tmp_path / "deepspeed_env"
    env = {
        "HOSTFILE": str(REPO / "launch" / "hostfile.example"),  # localhost slots=2
        "GPPF_DS_ENV_FILE": str(env_file),
        "WANDB_PROJECT": "gppf-test",
        "MASTER_PORT": "29611",
    }
    out = run_script(
        "deepspeed.sh",
        tmp_path,
        env,
        f"run.dir={run_dir}",
        f"data.root={tiny_shards}",
        "trainer.max_steps=2",
        "trainer.eval_at_start=false",
    )
    spawned = [line for line in out.splitlines() if "spawned with command" in line]
    assert len(spawned) == 2, out[-3000:]  # two ranks from `localhost slots=2`
    assert all("--local_rank" not in line for line in spawned)  # --no_local_rank
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [1, 2]
    exported = env_file.read_text()  # what the PDSH path would export on every node
    assert "WANDB_PROJECT=gppf-test" in exported and "HYDRA_FULL_ERROR=1" in exported
    assert "DS_ACCELERATOR=cpu" in exported


def test_torchrun_script_single_node(tmp_path: Path, tiny_shards: Path) -> None:
    run_dir = tmp_path / "run"
    out = run_script(
        "torchrun.sh",
        tmp_path,
        {"NPROC_PER_NODE": "2"},
        f"run.dir={run_dir}",
        f"data.root={tiny_shards}",
        "trainer.max_steps=2",
        "trainer.eval_at_start=false",
    )
    assert "1 node(s) x 2 process(es)" in out
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [1, 2]


def test_gppf_train_launcher_deepspeed(tmp_path: Path, tiny_shards: Path) -> None:
    run_dir = tmp_path / "run"
    gppf_train = str(Path(sys.executable).parent / "gppf-train")
    cmd = [
        gppf_train, "experiment=demo", *COMMON, f"run.dir={run_dir}", f"data.root={tiny_shards}",
        "launcher=deepspeed", f"launcher.hostfile={REPO / 'launch' / 'hostfile.example'}",
        "trainer.max_steps=2", "trainer.eval_at_start=false",
    ]  # fmt: skip
    env = dict(os.environ)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    spawned = [line for line in out.splitlines() if "spawned with command" in line]
    assert len(spawned) == 2, out[-3000:]  # `localhost slots=2`
    for line in spawned:  # every worker reads the one resolved config: Hydra ran once
        assert f"'gppf_dist.cli.worker', '{run_dir / 'config.yaml'}'" in line
        assert "--local_rank" not in line
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [1, 2]
    assert not (run_dir / "deepspeed_env").exists()  # one host: workers inherit this env

    bad = tmp_path / "hosts"
    bad.write_text("node001 slots=two\n")
    cmd = [*cmd[:-3], f"launcher.hostfile={bad}", "trainer.max_steps=2"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2  # a configuration error: no worker started
    assert f"`launcher.hostfile`={str(bad)!r} line 1" in proc.stderr
