"""`gppf-wandb`: W&B helpers for watching a pre-training run.

gppf-wandb workspace --entity E --project P [--name NAME] [--run-dir DIR] [--tasks t1,t2,...]
    [--dry-run]   # save the workspace of a run's panels (--dry-run: print them as JSON instead)

The panels follow the keys a run logs (`logging/run_keys.py`, `logging/workspace.py`). With
`--run-dir`, the tasks are that run's (its config.yaml) and, once it has a metrics.jsonl, the
panels are the keys it has logged; the expected keys it has not logged yet are named. Saving
needs W&B credentials (`wandb login`); exits 1 when the save fails, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gppf_dist.cli.usage import examples
from gppf_dist.config.load import load_run_config
from gppf_dist.logging.run_keys import STEP_METRIC, logged_keys, run_keys
from gppf_dist.logging.workspace import build_workspace, sections_json, workspace_sections
from gppf_dist.tasks.base import TaskSpec
from gppf_dist.tasks.demo import DEMO_TASKS
from gppf_dist.tasks.registry import get_task_type

DEFAULT_NAME = "gppf_dist pre-training"


def known_tasks(run_dir: Path | None) -> tuple[dict[str, str], str]:
    """({task: task type} a run trains, what says so): the run's config.yaml, else the 8
    pre-training tasks."""
    if run_dir is None:
        return {name: t for name, (t, _, _) in DEMO_TASKS.items()}, "the 8 pre-training tasks"
    if not run_dir.is_dir():
        raise ValueError(f"`--run-dir`={str(run_dir)!r} does not exist")
    if not (run_dir / "config.yaml").is_file():
        raise ValueError(f"`--run-dir`={str(run_dir)!r} has no config.yaml: not a gppf-train run")
    cfg = load_run_config(run_dir / "config.yaml")
    return {n: t.type for n, t in cfg.simt.active_tasks().items()}, f"the run in {run_dir}"


def chosen_tasks(given: str | None, known: dict[str, str], source: str) -> list[str]:
    """`--tasks` (comma-separated), each a task of `known`; all of `known` when not given."""
    if given is None:
        return list(known)
    tasks = [t.strip() for t in given.split(",")]
    if not all(tasks) or len(set(tasks)) != len(tasks):
        raise ValueError(f"`--tasks`={given!r} must list task names, each once, comma-separated")
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise ValueError(
            f"`--tasks`={given!r}: {', '.join(unknown)} not among {source} ({', '.join(known)})"
        )
    return tasks


def eval_metrics(types: dict[str, str]) -> dict[str, list[str]]:
    """{task: the metric names its evaluation reports}, primary first (as `evaluate` orders
    them). Only a metric's `compute` knows its names: every metric answers an evaluation of no
    samples with NaNs under the same names, so that is what is asked."""
    out = {}
    for task, type_name in types.items():
        task_type = get_task_type(type_name)
        spec = TaskSpec(name=task, type=type_name, input_size=(64, 64), num_classes=1,
                        num_keypoints=1, num_attributes=1)  # fmt: skip
        metric = task_type.new_metric(spec)
        values = metric.compute([metric.state()])
        out[task] = list(dict.fromkeys([task_type.primary_metric, *values]))
    return out


def _workspace(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir) if args.run_dir else None
    known, source = known_tasks(run_dir)
    tasks = chosen_tasks(args.tasks, known, source)
    expected = run_keys(eval_metrics({t: known[t] for t in tasks}))
    keys = expected.all()
    if run_dir is not None:
        path = run_dir / "metrics.jsonl"
        if path.is_file():
            keys, missing = expected.restrict(logged_keys(path))
            if missing:
                print(f"gppf-wandb: {path} has not logged {len(missing)} expected keys yet, "
                      f"left out: {', '.join(missing)}", file=sys.stderr)  # fmt: skip
        else:
            print(f"gppf-wandb: {path} does not exist yet: panels for every key a run of these "
                  "tasks logs", file=sys.stderr)  # fmt: skip
    sections = workspace_sections(keys, tasks)
    name = args.name or DEFAULT_NAME
    if args.dry_run:
        layout = {"entity": args.entity, "project": args.project, "name": name,
                  "x_axis": STEP_METRIC, "sections": sections_json(sections)}  # fmt: skip
        print(json.dumps(layout, indent=2))
        return 0
    panels = sum(len(s.panels) for s in sections)
    try:
        workspace = build_workspace(args.entity, args.project, sections, name=name).save()
        url = workspace.url
    except Exception as err:  # noqa: BLE001 - no credentials, no network, refused: one line
        reason = (str(err).strip().splitlines() or [""])[0]
        print(f"gppf-wandb: error: could not save workspace {name!r} to "
              f"{args.entity}/{args.project}: {type(err).__name__}: {reason} (W&B needs "
              "`wandb login` and the network; --dry-run shows the panels without them)",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"saved workspace {name!r} ({len(sections)} sections, {panels} panels): {url}")
    return 0


def _non_empty(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gppf-wandb",
        description=__doc__.splitlines()[0],
        **examples(
            "gppf-wandb workspace --entity my-team --project gppf_dist --run-dir runs/demo",
            "gppf-wandb workspace --help",
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True)
    ws = sub.add_parser(
        "workspace",
        help="save the W&B workspace to watch a pre-training run",
        description="Save a W&B workspace (saved view) of the project with one section per "
        "concern: objective, loss per task, final evaluation, throughput, balance, step time, "
        "data, non-finite steps, lego usage; every line plot against global_step.",
        **examples(
            "gppf-wandb workspace --entity my-team --project gppf_dist",
            "gppf-wandb workspace --entity my-team --project gppf_dist --run-dir runs/demo "
            "--name 'demo run'",
            "gppf-wandb workspace --entity my-team --project gppf_dist --tasks det,seg --dry-run",
        ),
    )
    ws.add_argument("--entity", required=True, type=_non_empty, help="W&B entity (user or team)")
    ws.add_argument("--project", required=True, type=_non_empty, help="W&B project of the runs")
    ws.add_argument("--name", type=_non_empty, help=f"workspace name (default: {DEFAULT_NAME!r})")
    ws.add_argument(
        "--run-dir",
        help="a run's directory: its tasks (config.yaml) and the keys its metrics.jsonl holds",
    )
    ws.add_argument(
        "--tasks",
        help="comma-separated task names (default: the run's, else the 8 pre-training tasks: "
        + ", ".join(DEMO_TASKS)
        + ")",
    )
    ws.add_argument("--dry-run", action="store_true", help="print the panels as JSON; save nothing")
    ws.set_defaults(func=_workspace)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ValueError as exc:
        print(f"gppf-wandb: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
