"""The saved W&B workspace to watch a pre-training run: which sections and panels, from the keys
the run logs (`run_keys.py`), and the `wandb_workspaces` object that `gppf-wandb workspace`
saves.

The layout is plain data (`Section`, `Panel`), so it is tested, printed (`--dry-run`) and
restricted to a run's keys without W&B. Each panel keeps only the keys it is given: a key no run
logs would make a panel that stays empty without saying why, so a panel none of whose keys is
given is left out (an expert-parallel panel for a run without expert parallelism).
`wandb_workspaces` is imported in `build_workspace` only: the gpu-check install set has no W&B.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from gppf_dist.logging.run_keys import HEATMAP_KEY, STEP_METRIC

Kind = Literal["line", "bar", "media"]
RANK_BUSY_REGEX = r"^busy_s/rank\d+$"
"""One `busy_s/rank<r>` per rank: a line plot shows every rank of any world size through it."""


@dataclass(frozen=True)
class Panel:
    title: str
    kind: Kind
    """line: against `global_step`; bar: each key's last value (the final evaluation, logged
    once); media: the images logged under the keys."""
    keys: tuple[str, ...]
    regex: str = ""
    """Line plots: W&B also plots every key this matches (keys of ranks not listed)."""


@dataclass(frozen=True)
class Section:
    name: str
    panels: tuple[Panel, ...]


def _panel(
    have: dict[str, None], title: str, kind: Kind, keys: Iterable[str], regex: str = ""
) -> Panel | None:
    found = tuple(k for k in keys if k in have)
    return Panel(title, kind, found, regex) if found else None


def _section(name: str, *panels: Panel | None) -> list[Section]:
    kept = tuple(p for p in panels if p is not None)
    return [Section(name, kept)] if kept else []


def _eval_keys(ordered: list[str], task: str) -> list[str]:
    prefix = f"eval/{task}/"
    return [k for k in ordered if k.startswith(prefix) and "/" not in k[len(prefix) :]]


def workspace_sections(keys: Iterable[str], tasks: list[str]) -> list[Section]:
    """The dashboard for a run that logs `keys` (evaluation metrics in the order given: the
    primary one first) and trains `tasks` (their panels in this order)."""
    if not tasks or len(set(tasks)) != len(tasks) or not all(tasks):
        raise ValueError(f"`tasks`={tasks!r} must name at least one task, each once")
    ordered = list(dict.fromkeys(keys))
    have = dict.fromkeys(ordered)

    def panel(title: str, kind: Kind, wanted: Iterable[str], regex: str = "") -> Panel | None:
        return _panel(have, title, kind, wanted, regex)

    def per_task(template: str) -> list[str]:
        return [template.format(t) for t in tasks]

    ranks = sorted((k for k in ordered if k.startswith("busy_s/rank")), key=_rank)
    return [
        *_section(
            "Objective",
            panel("objective: weighted task losses + router regularizer", "line", ["loss"]),
            panel("router regularizer", "line", ["loss/router_reg"]),
            panel("learning rate", "line", ["lr"]),
            panel("gradient norm (before clipping)", "line", ["grad_norm"]),
        ),
        *_section("Loss per task", *(panel(f"loss/{t}", "line", [f"loss/{t}"]) for t in tasks)),
        *_section(
            "Final evaluation",
            *(panel(f"eval/{t}", "bar", _eval_keys(ordered, t)) for t in tasks),
        ),
        *_section(
            "Throughput",
            panel("samples/s, all tasks", "line", ["samples_per_s"]),
            panel("samples/s per task", "line", per_task("samples_per_s/{}")),
            panel("model TFLOP/s, all ranks", "line", ["model_tflops"]),
            panel("MFU (model FLOPs over the devices' peak)", "line", ["mfu"]),
            panel("ms per sample per task (compute)", "line", per_task("cost_ms/{}")),
        ),
        *_section(
            "Balance",
            panel("balance efficiency: mean / max rank busy time", "line", ["balance_efficiency"]),
            panel("busy seconds per rank (0: an idle rank)", "line", ranks, RANK_BUSY_REGEX),
            panel("lego calls served on the calling rank", "line", ["ep/local_fraction"]),
        ),
        *_section(
            "Step time",
            panel("step time and its data wait (s)", "line", ["time/step_s", "time/data_s"]),
            panel("data wait: waiting for batches (s)", "line", ["time/data_s"]),
        ),
        *_section(
            "Data",
            panel("skipped bad samples per task (so far)", "line", per_task("data/skipped/{}")),
            panel("dropped targets per task (so far)", "line", per_task("data/dropped/{}")),
        ),
        *_section(
            "Non-finite steps",
            panel("skipped updates (non-finite gradient norm)", "line", ["update_skipped"]),
            panel("tasks with a non-finite loss", "line", per_task("nonfinite/{}")),
        ),
        *_section(
            "Lego usage", panel("lego usage: tasks x layers x legos", "media", [HEATMAP_KEY])
        ),
    ]


def _rank(key: str) -> int:
    tail = key.removeprefix("busy_s/rank")
    return int(tail) if tail.isdigit() else -1


def sections_json(sections: list[Section]) -> list[dict[str, Any]]:
    """The layout as JSON-ready data (`gppf-wandb workspace --dry-run`)."""
    return [
        {
            "name": s.name,
            "panels": [
                {"title": p.title, "kind": p.kind, "keys": list(p.keys)}
                | ({"regex": p.regex} if p.regex else {})
                for p in s.panels
            ],
        }
        for s in sections
    ]


def build_workspace(entity: str, project: str, sections: list[Section], name: str) -> Any:
    """The `wandb_workspaces.workspaces.Workspace` of `sections` (not saved: `.save()` needs W&B
    credentials and the network)."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    def convert(p: Panel) -> Any:
        if p.kind == "line":
            return wr.LinePlot(
                title=p.title, x=STEP_METRIC, y=list(p.keys), metric_regex=p.regex or None
            )
        if p.kind == "bar":
            return wr.BarPlot(title=p.title, metrics=list(p.keys))
        return wr.MediaBrowser(title=p.title, media_keys=list(p.keys))

    return ws.Workspace(
        entity=entity,
        project=project,
        name=name,
        sections=[
            ws.Section(name=s.name, panels=[convert(p) for p in s.panels], is_open=True)
            for s in sections
        ],
        settings=ws.WorkspaceSettings(x_axis=STEP_METRIC),
    )
