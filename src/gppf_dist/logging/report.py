"""The closing per-task table: loss at start and end (metrics.jsonl) and metric (eval.json)."""

from __future__ import annotations

import json
from pathlib import Path

from gppf_dist.logging.metrics import read_metrics


def summary_table(run_dir: Path) -> str:
    records = (
        read_metrics(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").is_file() else []
    )
    evals = (
        json.loads((run_dir / "eval.json").read_text()) if (run_dir / "eval.json").is_file() else {}
    )
    if not records:
        return f"no metrics in {run_dir}"
    first, last = records[0], records[-1]
    tasks = sorted(
        k.split("/", 1)[1] for k in last if k.startswith("loss/") and k != "loss/router_reg"
    )
    end_eval, start_eval = evals.get("tasks", {}), evals.get("start") or {}
    lines = [
        f"run {run_dir}: steps {first['step']}..{last['step']}, objective "
        f"{first['loss']:.4f} -> {last['loss']:.4f}",
        f"{'task':<12} {'loss@' + str(first['step']):>10} "
        f"{'loss@' + str(last['step']):>10}  metric",
    ]
    for task in tasks:
        metric = end_eval.get(task, {})
        name = next(iter(metric), "")
        start_value = start_eval.get(task, {}).get(name)
        shown = f"{name} {metric.get(name, float('nan')):.4f}" if name else "-"
        if start_value is not None:
            shown += f" (step 0: {start_value:.4f})"
        lines.append(
            f"{task:<12} {first['loss/' + task]:>10.4f} {last['loss/' + task]:>10.4f}  {shown}"
        )
    return "\n".join(lines)
