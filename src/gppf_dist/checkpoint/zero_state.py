"""World-free optimizer state under ZeRO 1/2: each rank's partitions, saved with the names and
offsets of the parameter pieces they hold, so that a run resumes at another world size or EP
size.

ZeRO 1/2 cut every parameter group into one flat fp32 master tensor per group and give each
rank a contiguous partition of it, with the optimizer state (AdamW's two moments, its step
counter) of that partition. Which parameter elements land on which rank depends on the world
size, so DeepSpeed's own per-rank files only load back at the world size that wrote them.

Here each rank writes `<tag>/gppf/zero_<rank>.pt`: per group its flat partition tensors (master
weights, `exp_avg`, `exp_avg_sq`), its step, and the index of `Piece`s (parameter name, first
element inside the flattened parameter, element count, offset inside the partition). Loading
under any layout builds `Sources` from the saved partitions around its own share
(`likely_files`; all of them when those do not cover it), memory-mapped so that only the bytes
a rank needs are read, and from the legos' whole-tensor files of an expert-parallel run, then
fills each destination piece element by element; a piece that no source covers fails naming
the parameter. The engine adapter (`engine/deepspeed.py`) produces the `Partition`s; this module
never sees DeepSpeed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from gppf_dist.checkpoint.layout import NAMED_DIR, partition_file
from gppf_dist.checkpoint.saving import write_torch

FORMAT = 1
STATE_KEYS = ("exp_avg", "exp_avg_sq")
MASTER = "param"
"""The fp32 master weights' key (beside the optimizer's STATE_KEYS)."""


def partition_files(tag_dir: Path) -> list[Path]:
    return sorted((tag_dir / NAMED_DIR).glob("zero_*.pt"))


def has_partitions(tag_dir: Path) -> bool:
    return bool(partition_files(tag_dir))


def likely_files(files: list[Path], rank: int, world: int) -> list[Path]:
    """The saved partitions (one per saving rank, in rank order) that rank `rank` of `world`
    most likely needs: ZeRO cuts each group's flat tensor into equal consecutive shares, so
    share `rank` of `world` overlaps the saving ranks around the same fraction (one more on
    each side for padding). Another EP split reorders the groups: then every file is needed
    (`Checkpointer` falls back to them all). Same layout: 3 files, not W."""
    saved = len(files)
    lo = max(0, rank * saved // world - 1)
    hi = min(saved, -(-(rank + 1) * saved // world) + 1)
    return files[lo:hi]


@dataclass(frozen=True)
class Piece:
    """Elements [start, start + numel) of the flattened parameter `name`, held at `offset` of a
    partition."""

    name: str
    start: int
    numel: int
    offset: int


@dataclass
class Partition:
    """One parameter group's share on this rank: flat tensors by key (MASTER and STATE_KEYS,
    all of one length), the group's step counter and the pieces the tensors hold."""

    tensors: dict[str, torch.Tensor]
    step: torch.Tensor
    pieces: list[Piece] = field(default_factory=list)


def fresh_adam_state(like: torch.Tensor, step_on_device: bool) -> dict[str, torch.Tensor]:
    """AdamW's state before its first step, as torch creates it (the step on the tensor's device
    for fused or capturable groups, else on the host), for a resume to fill in."""
    step = torch.zeros((), dtype=torch.float32, device=like.device if step_on_device else "cpu")
    return {"step": step, **{k: torch.zeros_like(like) for k in STATE_KEYS}}


def save_partitions(parts: list[Partition], tag_dir: Path, rank: int) -> None:
    """This rank's file (through `write_torch`: hashed as written, deferred in a background
    save)."""
    out = tag_dir / NAMED_DIR
    out.mkdir(parents=True, exist_ok=True)
    state = {
        "format": FORMAT,
        "groups": [
            {
                "tensors": {k: t.detach() for k, t in p.tensors.items()},
                "step": p.step.detach(),
                "pieces": [asdict(piece) for piece in p.pieces],
            }
            for p in parts
        ],
    }
    write_torch(state, out / partition_file(rank))


@dataclass
class _Span:
    start: int
    numel: int
    tensors: dict[str, torch.Tensor]
    """Flat views of exactly this span, by key."""
    step: float
    origin: str


class Sources:
    """Every saved piece of state, by parameter name."""

    def __init__(self) -> None:
        self._spans: dict[str, list[_Span]] = {}

    def add_partition_file(self, path: Path) -> None:
        saved = torch.load(path, weights_only=True, mmap=True, map_location="cpu")
        if saved.get("format") != FORMAT:
            found = saved.get("format")
            raise ValueError(f"{str(path)!r}: unknown ZeRO partition format {found!r}")
        for group in saved["groups"]:
            flat, step = group["tensors"], float(group["step"])
            for raw in group["pieces"]:
                piece = Piece(**raw)
                views = {k: t.narrow(0, piece.offset, piece.numel) for k, t in flat.items()}
                self._add(piece.name, _Span(piece.start, piece.numel, views, step, path.name))

    def add_whole(
        self, name: str, tensors: dict[str, torch.Tensor], step: float, origin: str
    ) -> None:
        """A parameter saved whole (an expert-parallel lego: its value and AdamW state)."""
        flat = {k: t.detach().reshape(-1) for k, t in tensors.items()}
        numel = next(iter(flat.values())).numel()
        self._add(name, _Span(0, numel, flat, step, origin))

    def _add(self, name: str, span: _Span) -> None:
        self._spans.setdefault(name, []).append(span)

    def __contains__(self, name: str) -> bool:
        return name in self._spans

    def read(self, name: str, start: int, numel: int, key: str) -> torch.Tensor:
        """Elements [start, start + numel) of `name`'s flattened `key` tensor."""
        out = torch.empty(numel, dtype=torch.float32)
        covered = 0
        for span in sorted(self._spans.get(name, []), key=lambda s: s.start):
            lo, hi = max(start, span.start), min(start + numel, span.start + span.numel)
            if lo >= hi:
                continue
            if lo != start + covered:
                break
            if key not in span.tensors:
                raise ValueError(
                    f"checkpoint has no {key!r} for parameter {name!r} ({span.origin})"
                )
            src = span.tensors[key].narrow(0, lo - span.start, hi - lo)
            out.narrow(0, lo - start, hi - lo).copy_(src)
            covered = hi - start
        if covered != numel:
            raise ValueError(
                f"checkpoint covers elements [{start}, {start + covered}) of parameter {name!r}, "
                f"not [{start}, {start + numel}): it cannot be resumed at this layout"
            )
        return out

    def step(self, name: str) -> float:
        steps = {span.step for span in self._spans.get(name, [])}
        if len(steps) != 1:
            raise ValueError(f"checkpoint holds parameter {name!r} at optimizer steps {steps}")
        return steps.pop()


@torch.no_grad()
def fill_partition(part: Partition, sources: Sources) -> None:
    """Every piece of `part` from `sources`: master weights, moments and the step."""
    steps: set[float] = set()
    for piece in part.pieces:
        for key, flat in part.tensors.items():
            values = sources.read(piece.name, piece.start, piece.numel, key)
            flat.narrow(0, piece.offset, piece.numel).copy_(values.to(flat.dtype))
        steps.add(sources.step(piece.name))
    if len(steps) > 1:
        raise ValueError(f"checkpoint's parameters of one group are at optimizer steps {steps}")
    if steps:
        part.step.fill_(steps.pop())


@torch.no_grad()
def fill_whole(name: str, param: torch.Tensor, state: dict[str, Any], sources: Sources) -> None:
    """A parameter held whole (an expert-parallel lego) and its AdamW `state` (tensors of its
    shape and a `step`, already present) from `sources`."""
    n = param.numel()
    param.copy_(sources.read(name, 0, n, MASTER).view_as(param).to(param.dtype))
    for key in STATE_KEYS:
        state[key].copy_(sources.read(name, 0, n, key).view_as(param).to(state[key].dtype))
    state["step"].fill_(sources.step(name))
