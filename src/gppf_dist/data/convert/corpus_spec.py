"""A corpus spec: which public datasets make up a pre-training corpus, and where they live.

`gppf-shards build --spec gppf15m` reads `gppf_dist/data/convert/specs/gppf15m.yaml` (any other spec
by path) to convert every dataset found under `--src-root` into one shard root. The spec also names
each task's type and label count, so recipes can size heads before any shard exists
(`SpecTask.planning_label_space`). The file format is documented in the shipped spec's header.

Everything is checked here, once, with the file and key in each message: a typo in a spec
should fail before hours of conversion, not after.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from gppf_dist.data.convert.readers import LAYOUTS
from gppf_dist.data.format.manifest import SPLITS
from gppf_dist.tasks.registry import TASK_TYPES, get_task_type

SPEC_DIR = Path(__file__).resolve().parent / "specs"
"""The specs the package ships, by bare name (`gppf15m` -> `specs/gppf15m.yaml`)."""

NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")
"""Task, manifest task and dataset names: no dots (task keys), no dashes (config keys)."""

LAYOUT_TYPES = {
    "cls": "classification",
    "det": "detection",
    "seg": "segmentation",
    "pose": "pose",
    "reid": "reid",
    "face": "face",
    "attr": "attributes",
}
"""A layout's default task name (`LAYOUTS`) -> the task type its samples have."""

_TOP_KEYS = {"name", "tasks"}
_TASK_KEYS = {"type", "num_labels", "datasets"}
_DATASET_KEYS = {"name", "task", "layout", "folder", "splits", "samples"}
_SPLIT_KEYS = {"src", "images"}


@dataclass(frozen=True)
class SpecSplit:
    """One split of a dataset: the layout's `--src` (and `--images`), relative to its folder."""

    src: str
    images: str | None = None


@dataclass(frozen=True)
class SpecDataset:
    """One public dataset, converted into the manifest task `task`."""

    name: str
    task: str
    layout: str
    folder: str
    splits: dict[str, SpecSplit]
    samples: int
    """Approximate train samples, for planning and progress only."""


@dataclass(frozen=True)
class SpecTask:
    """A pre-training task: its type, label count and datasets (primary first)."""

    name: str
    type: str
    num_labels: int
    datasets: tuple[SpecDataset, ...]

    def planning_label_space(self) -> dict[str, Any]:
        """A label space in the manifest's form with `num_labels` entries and generic names
        (the type's `placeholder_label_space`), which `tasks.registry.make_spec` accepts: heads
        can be sized before the primary dataset is converted (its manifest entry then holds the
        real names)."""
        return get_task_type(self.type).placeholder_label_space(self.num_labels)


@dataclass(frozen=True)
class CorpusSpec:
    """A corpus: its tasks by name, each with its datasets."""

    name: str
    tasks: dict[str, SpecTask]
    path: Path | None = None
    """The file it was read from."""

    def datasets(self) -> list[SpecDataset]:
        """Every dataset, task by task, primary first."""
        return [d for t in self.tasks.values() for d in t.datasets]

    def planning_label_spaces(self) -> dict[str, dict[str, Any]]:
        """`SpecTask.planning_label_space` of every task, by task name."""
        return {name: t.planning_label_space() for name, t in self.tasks.items()}


def spec_path(name_or_path: str) -> Path:
    """A bare name -> the shipped `specs/<name>.yaml`; a path (a `/` or a `.yaml` ending) as is."""
    if "/" in name_or_path or name_or_path.endswith((".yaml", ".yml")):
        path = Path(name_or_path)
        if not path.is_file():
            raise ValueError(f"corpus spec {name_or_path!r}: {path} does not exist")
        return path
    path = SPEC_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in SPEC_DIR.glob("*.yaml"))
        raise ValueError(
            f"corpus spec {name_or_path!r} is not a shipped spec (known: {known}); "
            "give a path to a spec file instead"
        )
    return path


def load_corpus_spec(name_or_path: str) -> CorpusSpec:
    """The checked spec `name_or_path` (see `spec_path`); ValueError naming file and key."""
    path = spec_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    return parse_corpus_spec(raw, path)


class _At:
    """Where a value sits in a spec file, for error messages: `<file>: tasks.det.datasets[1]`."""

    def __init__(self, path: Path | str, key: str = "") -> None:
        self.path, self.key = path, key

    def __truediv__(self, key: str | int) -> _At:
        step = f"[{key}]" if isinstance(key, int) else key
        sep = "" if isinstance(key, int) or not self.key else "."
        return _At(self.path, f"{self.key}{sep}{step}")

    def fail(self, what: str, value: Any = None) -> ValueError:
        got = "" if value is None else f", got {value!r:.80}"
        return ValueError(f"{self.path}: `{self.key or '<top>'}` {what}{got}")


def _mapping(raw: Any, at: _At, allowed: set[str], required: set[str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise at.fail("must be a mapping", raw)
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise at.fail(f"has unknown key(s) {unknown} (allowed: {sorted(allowed)})")
    missing = sorted(required - set(raw))
    if missing:
        raise at.fail(f"is missing key(s) {missing}")
    return raw


def _name(raw: Any, at: _At) -> str:
    if not isinstance(raw, str) or not NAME_RE.match(raw):
        raise at.fail("must be a name of letters, digits and `_` (no dots or dashes)", raw)
    return raw


def _count(raw: Any, at: _At, least: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < least:
        raise at.fail(f"must be an integer >= {least}", raw)
    return raw


def _relative(raw: Any, at: _At) -> str:
    ok = isinstance(raw, str) and raw != ""
    if not ok or PurePosixPath(raw).is_absolute() or ".." in PurePosixPath(raw).parts:
        raise at.fail("must be a path relative to the dataset's folder, without `..`", raw)
    return raw


def _split(raw: Any, at: _At) -> SpecSplit:
    raw = _mapping(raw, at, _SPLIT_KEYS, {"src"})
    images = raw.get("images")
    return SpecSplit(
        _relative(raw["src"], at / "src"),
        None if images is None else _relative(images, at / "images"),
    )


def _dataset(raw: Any, at: _At, task: str, type_: str, primary: bool) -> SpecDataset:
    raw = _mapping(raw, at, _DATASET_KEYS, _DATASET_KEYS)
    name = _name(raw["name"], at / "name")
    target = _name(raw["task"], at / "task")
    if primary and target != task:
        raise (at / "task").fail(
            f"must be {task!r}: the primary (first) dataset converts into the task's own name",
            target,
        )
    if not primary and not target.startswith(f"{task}_"):
        raise (at / "task").fail(
            f"must be `{task}_<dataset>` (a further dataset of task {task!r} gets a manifest "
            "task of its own: one manifest task holds one label space)",
            target,
        )
    layout = raw["layout"]
    if layout not in LAYOUTS:
        raise (at / "layout").fail(f"is not a known layout (known: {sorted(LAYOUTS)})", layout)
    made = LAYOUT_TYPES.get(LAYOUTS[layout][1])
    if made is not None and made != type_:
        raise (at / "layout").fail(f"makes {made} samples, not task {task!r}'s {type_}", layout)
    folder = _relative(raw["folder"], at / "folder")
    splits_raw = raw["splits"]
    if not isinstance(splits_raw, dict) or not splits_raw:
        raise (at / "splits").fail(f"must map some of {list(SPLITS)} to a split", splits_raw)
    bad = sorted(set(splits_raw) - set(SPLITS))
    if bad:
        raise (at / "splits").fail(f"has unknown split(s) {bad} (known: {list(SPLITS)})")
    splits = {s: _split(splits_raw[s], at / "splits" / s) for s in SPLITS if s in splits_raw}
    samples = _count(raw["samples"], at / "samples", 0)
    return SpecDataset(name, target, layout, folder, splits, samples)


def _task(name: str, raw: Any, at: _At) -> SpecTask:
    raw = _mapping(raw, at, _TASK_KEYS, _TASK_KEYS)
    type_ = raw["type"]
    if type_ not in TASK_TYPES:
        raise (at / "type").fail(f"is not a known task type (known: {sorted(TASK_TYPES)})", type_)
    num_labels = _count(raw["num_labels"], at / "num_labels", 1)
    listed = raw["datasets"]
    if not isinstance(listed, list) or not listed:
        raise (at / "datasets").fail("must be a non-empty list, primary dataset first", listed)
    datasets = tuple(
        _dataset(d, at / "datasets" / i, name, type_, i == 0) for i, d in enumerate(listed)
    )
    return SpecTask(name, type_, num_labels, datasets)


def parse_corpus_spec(raw: Any, path: Path | str) -> CorpusSpec:
    """The checked `CorpusSpec` of a spec file's parsed YAML (`path` names it in errors)."""
    top = _At(path)
    raw = _mapping(raw, top, _TOP_KEYS, {"tasks"})
    name = raw.get("name", Path(path).stem)
    if not isinstance(name, str) or not name:
        raise (top / "name").fail("must be a non-empty string", name)
    tasks_raw = raw["tasks"]
    if not isinstance(tasks_raw, dict) or not tasks_raw:
        raise (top / "tasks").fail("must map task names to tasks", tasks_raw)
    tasks = {_name(n, top / "tasks"): _task(n, t, top / "tasks" / n) for n, t in tasks_raw.items()}
    owner: dict[str, str] = {}
    names: set[str] = set()
    for task in tasks.values():
        for i, d in enumerate(task.datasets):
            where = top / "tasks" / task.name / "datasets" / i
            if d.task in owner:
                raise (where / "task").fail(
                    f"is also the manifest task of {owner[d.task]} (one manifest task holds one "
                    "dataset's label space)",
                    d.task,
                )
            if d.name in names:
                raise (where / "name").fail("names a dataset listed before", d.name)
            owner[d.task], names = f"`{where.key}`", names | {d.name}
    return CorpusSpec(name, tasks, Path(path))
