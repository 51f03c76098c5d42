"""`gppf-extract run_dir=DIR task=T out=FILE [batch=2] [seed=0]`: one task's dense network.

Loads the run's `config.yaml`, the label spaces from its shard manifest and the model weights of
the newest complete checkpoint (`checkpoint/weights.py`), extracts task T's active path as a plain
dense network (`gppf_dist.model.extract`) and writes:

- `FILE`: the `torch.export` program; `torch.export.load(FILE).module()(x)` runs it with plain
  torch on uint8 B×3×H×W images of the task's input size (no gppf_dist import needed), any batch
  size B (the batch dimension is dynamic; H×W are fixed). Its contract (input dtype, layout and
  size, output keys and their meaning, label space: `model/export_contract.py`) is inside the
  file as `gppf_contract.json` (`torch.export.load(FILE, extra_files={"gppf_contract.json": ""})`
  fills the dict) and beside it as `FILE.json`;
- `FILE.input.pt`: a sample input (the first `batch` validation images of the task, or random
  images when the shards are not reachable);
- `FILE.expected.pt`: the routed model's eval-mode output for it (tensor entries only).

Before saving, the exported program is run on the sample and on a batch one larger and compared
with the routed model's outputs.

Keys: `run_dir` (a gppf-train/gppf-finetune run directory), `task` (one of its tasks), `out` (the
file to write), `batch` (sample images, default 2), `seed` (of random sample images, default 0).

Example:
  gppf-extract run_dir=runs/demo task=det out=det.pt2
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from gppf_dist.checkpoint.trained import load_run
from gppf_dist.cli.usage import wants_help
from gppf_dist.data.format.manifest import load_manifest
from gppf_dist.data.load.eval_loader import iter_eval_batches
from gppf_dist.model.build import GppfModel
from gppf_dist.model.export_contract import CONTRACT_NAME, contract, contract_json
from gppf_dist.model.extract import extract_task, tensors_only
from gppf_dist.model.summary import sample_input, tensor_leaves
from gppf_dist.tasks.base import TaskSpec
from gppf_dist.tasks.registry import get_task_type

USAGE = "usage: gppf-extract run_dir=DIR task=T out=FILE [batch=2] [seed=0]"
RTOL, ATOL = 1e-4, 1e-4
"""Tolerance of the self-check: the routed model's fused lego kernels sum in another order."""


def load_trained(run_dir: Path) -> tuple[GppfModel, dict[str, TaskSpec], Any, int]:
    """(model in eval mode with the newest checkpoint's weights, specs, run config, its step)."""
    trained = load_run(run_dir)
    return trained.model, trained.specs, trained.cfg, trained.step


def sample_images(cfg: Any, spec: TaskSpec, batch: int, seed: int) -> torch.Tensor:
    """The first `batch` validation images of the task; random images if that fails."""
    root = Path(cfg.data.root)
    try:
        for b in iter_eval_batches(
            root=root,
            manifest=load_manifest(root),
            task=spec.name,
            spec=spec,
            task_type=get_task_type(spec.type),
            split="val",
            batch_size=batch,
        ):
            return b.images
    except (OSError, ValueError) as err:
        print(f"gppf-extract: no validation images ({err}); using random ones", file=sys.stderr)
    return sample_input(spec, batch=batch, seed=seed)


def extract(run_dir: Path, task: str, out: Path, batch: int = 2, seed: int = 0) -> float:
    """Write FILE, FILE.input.pt, FILE.expected.pt; returns the self-check's max abs difference."""
    model, specs, cfg, step = load_trained(run_dir)
    if task not in specs:
        raise ValueError(f"`task`={task!r} is not one of the run's tasks {sorted(specs)}")
    spec = specs[task]
    images = sample_images(cfg, spec, batch, seed)
    with torch.no_grad():
        expected = tensors_only(model(task, images))
    dense = extract_task(model, task, spec.input_size)
    # the batch dimension is dynamic; a sample of one would be specialised, so export on two
    example = images if len(images) > 1 else images.expand(2, -1, -1, -1)
    batch_dim = {0: torch.export.Dim("batch", min=1)}
    program = torch.export.export(dense, (example,), dynamic_shapes=(batch_dim,))
    with torch.no_grad():
        got = program.module()(images)
        other = torch.cat([images, images[:1]])  # another batch size than the sample's
        want_other, got_other = tensors_only(model(task, other)), program.module()(other)
    diff = max(_max_diff(task, expected, got), _max_diff(task, want_other, got_other))
    out.parent.mkdir(parents=True, exist_ok=True)
    terms = contract_json(contract(spec, len(images), run=cfg.run.name, step=step))
    torch.export.save(program, out, extra_files={CONTRACT_NAME: terms})
    Path(f"{out}.json").write_text(terms + "\n", encoding="utf-8")
    torch.save(images, f"{out}.input.pt")
    torch.save(expected, f"{out}.expected.pt")
    return diff


def _max_diff(task: str, expected: Any, got: Any) -> float:
    """Largest absolute difference of the exported program's outputs from the routed model's."""
    diff = 0.0
    for a, b in zip(tensor_leaves(expected), tensor_leaves(got), strict=True):
        if a.shape != b.shape or not torch.allclose(a, b, rtol=RTOL, atol=ATOL):
            raise RuntimeError(f"extracted `{task}` disagrees with the routed model")
        diff = max(diff, float((a - b).abs().max()) if a.numel() else 0.0)
    return diff


def parse_args(args: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or key not in ("run_dir", "task", "out", "batch", "seed"):
            raise ValueError(
                f"argument {arg!r} is not one of run_dir=, task=, out=, batch=, seed= "
                "(--help for an example)"
            )
        values[key] = value
    for key in ("run_dir", "task", "out"):
        if not values.get(key):
            raise ValueError(f"`{key}` is required\n{USAGE}")
    for key in ("batch", "seed"):
        if key in values and not values[key].isdigit():
            raise ValueError(f"`{key}`={values[key]!r} must be a non-negative int")
    if values.get("batch") == "0":
        raise ValueError("`batch`='0' must be >= 1")
    return values


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if wants_help(args, __doc__):
        return
    try:
        values = parse_args(args)
        out = Path(values["out"])
        diff = extract(
            Path(values["run_dir"]),
            values["task"],
            out,
            batch=int(values.get("batch", 2)),
            seed=int(values.get("seed", 0)),
        )
    except ValueError as err:
        raise SystemExit(f"gppf-extract: {err}") from None
    print(
        f"wrote {out} (+ .json: its contract, .input.pt, .expected.pt): uint8 images "
        f"B x 3 x H x W, any batch size B; max |exported - routed| = {diff:.3g}"
    )


if __name__ == "__main__":
    main()
