"""`gppf-export run_dir=DIR out=DIR`: a run's newest checkpoint as a release folder.

Writes `config.json` + `model.safetensors` (`model/pretrained.py`: no pickle) and a `README.md`
model card: the pre-training tasks with their datasets and batches, the step, the final
evaluation table (the run's eval.json), and how to load it. The folder is then loaded back and
every task's output compared with the checkpoint's model on the same images before the command
reports success.

Keys: `run_dir` (a gppf-train/gppf-finetune run directory), `out` (the folder to write).

Example:
  gppf-export run_dir=runs/demo out=release/demo
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from gppf_dist.checkpoint.trained import TrainedRun, load_run
from gppf_dist.cli.usage import wants_help
from gppf_dist.model.pretrained import WEIGHTS_NAME, load_pretrained, routes_of, save_pretrained
from gppf_dist.model.summary import sample_input, tensor_leaves

USAGE = "usage: gppf-export run_dir=DIR out=DIR"
KEYS = ("run_dir", "out")


def _eval_table(run_dir: Path) -> list[str]:
    path = run_dir / "eval.json"
    if not path.is_file():
        return ["No final evaluation was recorded (the run has no eval.json)."]
    evals = json.loads(path.read_text(encoding="utf-8"))
    lines = [
        f"Evaluated at step {evals.get('step', '?')} on each task's `val` split:",
        "",
        "| task | metric | value |",
        "|---|---|---|",
    ]
    for task, metrics in sorted(evals.get("tasks", {}).items()):
        for name, value in metrics.items():
            shown = f"{value:.4f}" if isinstance(value, int | float) else str(value)
            lines.append(f"| {task} | {name} | {shown} |")
    return lines


def _how_trained(run: TrainedRun) -> str:
    ft = run.cfg.finetune
    if not ft.enabled:
        return f"pre-trained with SIMT for {run.step} steps on {len(run.specs)} tasks."
    start = "from scratch" if ft.pretrained == "none" else f"from `{ft.pretrained}`"
    return (
        f"fine-tuned {start} for {run.step} steps on `{ft.task}`: route `{ft.chosen_from}`, "
        f"`tune={ft.tune}`."
    )


def model_card(run: TrainedRun, run_dir: Path) -> str:
    cfg, model = run.cfg, run.model
    params = sum(p.numel() for p in model.parameters())
    routes = routes_of(model)
    lines = [
        "---",
        "library_name: gppf_dist",
        "tags: [gppf, multi-task, lego-units, mixture-of-experts, vision]",
        "---",
        "",
        f"# {cfg.run.name}: GPPF ({cfg.model.name})",
        "",
        f"A GPPF backbone ({cfg.model.family}, {params / 1e6:.1f}M parameters) with "
        f"{cfg.model.num_legos} lego units per lego layer, {cfg.model.top_k} active per task "
        f"and layer, {_how_trained(run)}",
        "",
        "## Tasks",
        "",
        "| task | type | dataset | input (h x w) | global batch | weight |",
        "|---|---|---|---|---|---|",
    ]
    for name, spec in run.specs.items():
        t = cfg.simt.tasks[name]
        dataset = run.manifest.tasks[name].dataset
        lines.append(
            f"| {name} | {spec.type} | {dataset} | {spec.input_size[0]} x {spec.input_size[1]} "
            f"| {t.batch_size} | {t.weight} |"
        )
    lines += ["", "## Evaluation", "", *_eval_table(run_dir), "", "## Routes", ""]
    lines += [f"- `{task}`: legos per layer {r['legos']}" for task, r in routes.items()]
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from gppf_dist.model.pretrained import from_pretrained",
        'model = from_pretrained("<this folder>")  # safetensors only, eval mode',
        f'outputs = model("{next(iter(run.specs))}", images)  # uint8 B x 3 x H x W',
        "```",
        "",
        f"`{WEIGHTS_NAME}` holds every tensor by name; `config.json` the architecture, the tasks'",
        "label spaces and the routes above.",
        "",
    ]
    return "\n".join(lines)


def export(run_dir: Path, out: Path) -> None:
    """Write the folder, load it back and check every task's outputs are the run's, exactly."""
    run = load_run(run_dir)
    meta: dict[str, Any] = {"step": run.step, "run": run.cfg.run.name}
    save_pretrained(run.model, out, meta)
    (out / "README.md").write_text(model_card(run, Path(run_dir)), encoding="utf-8")
    loaded, _ = load_pretrained(out)
    with torch.no_grad():
        for task, spec in run.specs.items():
            images = sample_input(spec, batch=2, seed=0)
            want, got = tensor_leaves(run.model(task, images)), tensor_leaves(loaded(task, images))
            if len(want) != len(got) or not all(map(torch.equal, want, got)):
                raise RuntimeError(f"the exported model's `{task}` outputs differ from the run's")


def parse_args(args: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or key not in KEYS:
            keys = ", ".join(k + "=" for k in KEYS)
            raise ValueError(f"argument {arg!r} is not one of {keys} (--help for an example)")
        values[key] = value
    for key in KEYS:
        if not values.get(key):
            raise ValueError(f"`{key}` is required\n{USAGE}")
    return values


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if wants_help(args, __doc__):
        return
    try:
        values = parse_args(args)
        out = Path(values["out"])
        export(Path(values["run_dir"]), out)
    except ValueError as err:
        raise SystemExit(f"gppf-export: {err}") from None
    files = ", ".join(sorted(p.name for p in out.iterdir() if not p.name.startswith(".")))
    print(f"wrote {out}: {files}; reloaded outputs identical on every task")


if __name__ == "__main__":
    main()
