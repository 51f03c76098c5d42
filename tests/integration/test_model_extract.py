"""`gppf-extract`: each task's dense sub-network, exported, matches the routed model.

The ResNet run dir comes from a real 1-step `gppf-train`; the ViT one is built in the test in the
same layout (config.yaml + a DeepSpeed-style `mp_rank_00_model_states.pt` with key `module`).
The exported programs are then checked by a subprocess that imports plain torch only.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from gppf_dist.checkpoint.layout import DEEPSPEED_MODULE_FILE
from gppf_dist.checkpoint.manager import mark_complete
from gppf_dist.cli import extract as extract_cli
from gppf_dist.config.load import save_run_config
from gppf_dist.config.schema import RunConfig
from gppf_dist.data.format.manifest import load_manifest
from gppf_dist.model.build import build_model
from gppf_dist.tasks.registry import make_spec
from tests.dist.run_pool import PoolRuns

BIN = Path(sys.executable).parent
TASKS = ["attr", "cls_object", "det", "face", "pose", "reid", "seg"]  # one per task type

CHECK = """
import json, sys, torch
assert "gppf_dist" not in sys.modules
def leaves(o):
    if isinstance(o, torch.Tensor):
        return [o]
    if isinstance(o, dict):
        return [t for v in o.values() for t in leaves(v)]
    return [t for v in o for t in leaves(v)]
for path in sys.argv[1:]:
    extra = {"gppf_contract.json": ""}
    program = torch.export.load(path, extra_files=extra)
    terms = json.loads(extra["gppf_contract.json"])
    with open(path + ".json") as f:
        assert json.load(f) == terms, path
    x = torch.load(path + ".input.pt", weights_only=True)
    expected = torch.load(path + ".expected.pt", weights_only=True)
    # the contract describes the sample: uint8, B x 3 x H x W at the fixed size
    assert terms["input"]["dtype"] == "uint8" == str(x.dtype).split(".")[1], path
    assert terms["input"]["shape"] == ["B", *x.shape[1:]], (path, terms["input"])
    keys = sorted(expected) if isinstance(expected, dict) else [""]
    assert sorted(terms["outputs"]) == keys, (path, terms["outputs"])
    with torch.no_grad():
        got = program.module()(x)
        # the batch dimension is dynamic: one image, and more than the sample's
        for b in (1, len(x) + 2):
            other = x[torch.arange(b) % len(x)]
            out = program.module()(other)
            batched = [t for t in leaves(out) if t.shape[:1] == (b,)]
            assert batched, (path, b, [t.shape for t in leaves(out)])
            first = [t[0] for t in leaves(out) if t.shape[:1] == (b,)]
            ref = [t[0] for t in leaves(got) if t.shape[:1] == (len(x),)]
            for a, c in zip(ref, first, strict=True):
                assert torch.allclose(a, c, rtol=1e-4, atol=1e-4), (path, b)
    pairs = list(zip(leaves(expected), leaves(got)))
    assert pairs and len(leaves(expected)) == len(leaves(got)), path
    for a, b in pairs:
        assert a.dtype == b.dtype == torch.float32 or not a.is_floating_point(), path
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4), (path, (a - b).abs().max())
assert "gppf_dist" not in sys.modules
print("ok", len(sys.argv) - 1)
"""


def check_with_plain_torch(files: list[Path]) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CHECK, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd="/",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == f"ok {len(files)}"


def test_extract_resnet_run_through_cli(
    pool_runs: PoolRuns, tmp_path: Path, tiny_shards: Path
) -> None:
    run_dir = tmp_path / "run"  # a demo run of one step (gppf-train's, on a pooled worker)
    pool_runs.train(
        run_dir, tiny_shards, "trainer.max_steps=1", "trainer.checkpoint_every=1",
        "trainer.eval_at_start=false", "launcher.nproc=1",
    )  # fmt: skip
    out = tmp_path / "out"
    first, *rest = TASKS
    cli = [str(BIN / "gppf-extract"), f"run_dir={run_dir}", f"task={first}"]
    proc = subprocess.run([*cli, f"out={out / first}.pt2"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for task in rest:  # in-process: same code path, without the interpreter start-up
        one = ["batch=1"] if task == "det" else []  # a sample of one still exports a dynamic batch
        extract_cli.main([f"run_dir={run_dir}", f"task={task}", f"out={out / task}.pt2", *one])
    check_with_plain_torch([out / f"{t}.pt2" for t in TASKS])


def fake_run_dir(run_dir: Path, cfg: RunConfig) -> None:
    """A run dir in gppf-train's layout with a freshly initialised model's weights."""
    manifest = load_manifest(Path(cfg.data.root))
    specs = {
        n: make_spec(n, t.type, tuple(t.input_size), manifest.tasks[n].label_space)
        for n, t in cfg.simt.active_tasks().items()
    }
    torch.manual_seed(1)
    model = build_model(cfg.model, specs)
    run_dir.mkdir(parents=True)
    save_run_config(cfg, run_dir / "config.yaml")
    tag_dir = run_dir / "checkpoints" / "step_00000007"
    tag_dir.mkdir(parents=True)
    torch.save({"module": model.state_dict()}, tag_dir / DEEPSPEED_MODULE_FILE)
    mark_complete(run_dir / "checkpoints", "step_00000007", {"step": 7})


def test_extract_vit_every_task_type(
    tmp_path: Path, tiny_shards: Path, compose_run: Callable[..., RunConfig]
) -> None:
    cfg = compose_run("experiment=demo", "model=gppf_vit_tiny", f"data.root={tiny_shards}")
    run_dir = tmp_path / "run"
    fake_run_dir(run_dir, cfg)
    files = []
    for task in TASKS:
        out = tmp_path / "out" / f"{task}.pt2"
        extract_cli.main([f"run_dir={run_dir}", f"task={task}", f"out={out}", "batch=3"])
        files.append(out)
    assert torch.load(f"{files[0]}.input.pt", weights_only=True).shape[0] == 3
    check_with_plain_torch(files)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["task=det", "out=x"], "`run_dir` is required"),
        (["run_dir=/nonexistent", "task=det", "out=x"], "has no config.yaml"),
        (["run_dir=.", "task=det", "out=x", "batch=0"], "`batch`='0'"),
        (["run_dir=.", "task=det", "out=x", "colour=red"], "'colour=red'"),
    ],
)
def test_extract_bad_arguments(args: list[str], message: str) -> None:
    with pytest.raises(SystemExit, match=message):
        extract_cli.main(args)
