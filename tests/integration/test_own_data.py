"""README's "Train on your own data", run as written: its commands are read from README.md and
run on a small ImageFolder of real JPEGs made here, in a copy of a demo shard root (the demo's
8 synthetic tasks), with a few steps on one worker added to every `gppf-train`."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from gppf_dist.logging.metrics import read_metrics

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SHORT = (
    "logger=none",
    "launcher.nproc=1",
    "trainer.max_steps=2",
    "trainer.checkpoint_every=2",
    "trainer.eval_at_start=false",
    "trainer.progress=false",
    "trainer.eval_batch_size=16",
)
COLORS = {"red": (200, 30, 30), "green": (30, 180, 40), "blue": (30, 40, 200)}


def readme_commands() -> list[list[str]]:
    """The commands of the section's bash blocks (continuations joined, comments dropped)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Train on your own data", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip():
                commands.append(shlex.split(line, comments=True))
    return commands


def make_imagefolder(root: Path, per_class: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for name, rgb in COLORS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            noise = rng.integers(-25, 25, size=(48, 48, 3))
            pixels = np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:03d}.jpg", quality=90)


def test_readme_own_data_commands(tmp_path: Path, tiny_shards: Path) -> None:
    make_imagefolder(tmp_path / "my_colors" / "train", 12, seed=0)
    make_imagefolder(tmp_path / "my_colors" / "val", 4, seed=1)
    shutil.copytree(tiny_shards, tmp_path / "shards")  # the demo's shard root
    commands = readme_commands()
    assert [c[0] for c in commands] == [".venv/bin/gppf-shards"] * 4 + [".venv/bin/gppf-train"] * 2
    for cmd in commands:
        argv = [str(BIN / Path(cmd[0]).name), *cmd[1:]]
        if argv[0].endswith("gppf-train"):
            argv += SHORT
        proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (
            shlex.join(argv) + "\n" + proc.stdout[-2000:] + proc.stderr[-3000:]
        )
    assert (tmp_path / "colors.png").stat().st_size > 0
    alone = read_metrics(tmp_path / "runs" / "colors" / "metrics.jsonl")
    assert [r["step"] for r in alone] == [1, 2]
    assert all("loss/colors" in r and "loss/det" not in r for r in alone)
    both = read_metrics(tmp_path / "runs" / "demo_colors" / "metrics.jsonl")
    assert all("loss/colors" in r and "loss/det" in r and "loss/seg" in r for r in both)

    # The YAML route the section names: `--config-dir my_conf simt=mine`, demo tasks + colors.
    (tmp_path / "my_conf" / "simt").mkdir(parents=True)
    (tmp_path / "my_conf" / "simt" / "mine.yaml").write_text(
        "defaults: [gppf15m_demo, _self_]\n"
        "tasks:\n  colors: {type: classification, batch_size: 16, input_size: [64, 64]}\n",
        encoding="utf-8",
    )
    argv = [str(BIN / "gppf-train"), "--config-dir", "my_conf", "simt=mine", "experiment=demo",
            "simt.dry_run=true", "launcher.nproc=2", "logger=none"]  # fmt: skip
    proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "colors" in proc.stdout and "det" in proc.stdout


def test_convert_warns_only_when_default_streams_cannot_be_fed(tmp_path: Path) -> None:
    """One shard is enough for the default 4 streams when it has sample offsets (our writer
    records them) and at least 4 samples; with 3 samples convert says what to change."""
    shards = str(BIN / "gppf-shards")
    for per_class, warned in ((1, True), (4, False)):
        src, out = tmp_path / f"set{per_class}", tmp_path / f"out{per_class}"
        make_imagefolder(src, per_class, seed=per_class)
        argv = [shards, "convert", "imagefolder", "--src", str(src), "--out", str(out),
                "--task", "colors", "--quiet"]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert ("warning:" in proc.stderr) == warned, proc.stderr
        if warned:
            assert "1 train shard(s) with 3 samples" in proc.stderr
            assert "convert at least 4 samples" in proc.stderr
            assert "data.streams_per_task set to at most 3" in proc.stderr
