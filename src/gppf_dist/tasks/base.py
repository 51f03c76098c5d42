"""The contract every task type fulfils.

A task type (classification, detection, ...) bundles everything that differs between tasks:
its label space, the schema of its shard samples and how `gppf-shards inspect` draws them, how a
decoded sample becomes a fixed-size input and a target, how targets collate, the head, the
per-sample loss, the evaluation metric and what its exported program returns. Every other
package asks `tasks.registry.get_task_type` and never switches on a type's name, so a new task
type is one file that calls `tasks.registry.register_task_type` (loaded with `plugins=[...]`).

Exactness rule (DESIGN.md §5.1): `loss` returns one value per sample, normalised within that
sample only. The engine sums these over the task's *global* batch and divides by its size, so the
objective does not depend on how a batch is split over ranks. Losses that couple samples (e.g. a
triplet loss) must only couple samples that share a `groups` id: a group is one canonical stream's
share of a step, which always lives on a single rank.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from gppf_dist.tasks.common.drawing import Canvas


@dataclass(kw_only=True)
class TaskSpec:
    """What a head needs to know about one task: its type and label space."""

    name: str
    type: str
    input_size: tuple[int, int]
    num_classes: int = 0
    """Classes (classification, detection, segmentation) or identities (reid, face)."""
    num_keypoints: int = 0
    num_attributes: int = 0
    label_space: dict[str, Any] = field(default_factory=dict)
    """The manifest's label space for this task (class/keypoint/attribute names)."""


@dataclass(kw_only=True)
class Sample:
    """One decoded shard sample, as the data layer hands it to a task type."""

    key: str
    image: np.ndarray
    """HxWx3 uint8 RGB: the source image, or with `scale_eighths` < 8 the source reduced."""
    ann: dict[str, Any]
    """The sample's `json` member (schema per task type, see shards/README.md); coordinates
    are source pixels whatever `scale_eighths` is."""
    mask: np.ndarray | None = None
    """HxW uint8 class ids from the `png` member (segmentation only); 255 = ignore. Always at
    the source's full size."""
    scale_eighths: int = 8
    """The image is the source decoded at `scale_eighths`/8 of its size (`ceil(w·m/8)` pixels
    across): a source point x lies at x·m/8 in `image` (`transforms.warp_sample` maps it)."""
    source_size: tuple[int, int] | None = None
    """(width, height) of the source image when `scale_eighths` < 8."""
    decoded_by: str = "pillow"
    """`turbo` for an image from libjpeg-turbo (whose DCT did the downscaling, so the warp may
    use a plain bilinear filter); `pillow` or `gpu` (full size, warped with Pillow's
    antialiasing) otherwise."""
    dropped: dict[str, int] = field(default_factory=dict)
    """Filled by `TaskType.prepare`: targets the geometry or augmentation made degenerate and
    dropped, by kind (`boxes`, `keypoints`); the sample itself is kept. The data layer counts
    them per task (`SkipCounter.dropped`), apart from skipped samples."""


@dataclass(kw_only=True)
class Batch:
    """A collated batch of one task on one rank."""

    task: str
    images: torch.Tensor
    """B x 3 x H x W uint8; normalised on the device by the model."""
    targets: Any
    """Task-type specific, produced by `TaskType.collate`; supports `.to(device)` via `move_to`."""
    groups: torch.Tensor
    """B int64: the canonical-stream chunk each sample came from (see module docstring)."""
    keys: list[str]


class Metric(Protocol):
    """Accumulates evaluation state; states from all ranks are merged before `compute`."""

    def update(self, outputs: Any, targets: Any) -> None: ...

    def state(self) -> Any:
        """Picklable local state (tensors on CPU, lists)."""

    def compute(self, states: list[Any]) -> dict[str, float]:
        """Merge the states of all ranks and return named values; `primary` names the main one."""


class TaskType(Protocol):
    """One registry entry; see `gppf_dist.tasks.registry`.

    Optional members (looked up with `getattr`):
    - `source_window(ann, width, height, spec) -> (w, h)`, the size in source pixels of the
      window `prepare` resizes to `spec.input_size`, known from the annotation alone. The data
      layer then decodes JPEGs reduced as far as that window allows (`data.jpeg`), and `prepare`
      must warp through `transforms.warp_sample` and size-check through `transforms.check_image`
      (both honour `Sample.scale_eighths`). A task type without it always gets full-size images.
    - `check_mask(key, mask, label_space)`, required when `needs_mask`: ValueError naming the
      sample if the HxW uint8 mask holds an id outside the label space.
    - `class_label(ann) -> int`, for a type with one class per sample: the sample's class id.
      `gppf-shards verify` warns about shards whose mix of it is far from their split's, and
      few-shot subsets (`finetune.shots`) pick samples per class by it.
    """

    name: str
    primary_metric: str
    higher_is_better: bool
    couples_samples: bool
    """True when `loss` couples the samples of a group (see the module docstring): plans then
    keep each group, one stream's share, on one rank and in one micro-batch."""
    label_space_keys: tuple[str, ...]
    """Keys a manifest's label space for this type must hold (checked when it is read)."""
    needs_mask: bool
    """Samples carry a `png` class-id mask (`Sample.mask`); a sample without one is skipped."""
    export_outputs: dict[str, str]
    """Each key of the head's output and its meaning, for an exported program's contract
    (`model.export_contract`); "" for a head that returns one tensor."""

    def label_counts(self, label_space: dict[str, Any]) -> dict[str, int]:
        """The `TaskSpec` counts (`num_classes`, `num_keypoints`, `num_attributes`) the label
        space gives, {} for none. A bad label space: ValueError starting with the key and value,
        e.g. "`label_space.classes`=[] must be ..." (the readers of `tasks.common.label_space`
        do so; `make_spec` puts the task's key path in front)."""

    def placeholder_label_space(self, n: int) -> dict[str, Any]:
        """A label space with `n` labels and generic names that `label_counts` accepts, to size
        heads before the data exists (`data.convert.corpus_spec`)."""

    def check_annotation(
        self,
        key: str,
        ann: dict[str, Any],
        label_space: dict[str, Any],
        width: int,
        height: int,
        split: str,
    ) -> None:
        """ValueError naming the sample `key`, the field and its value unless `ann` (the `json`
        member, a dict whose `width`/`height` are already checked) has this type's schema and
        bounds (boxes and keypoints inside the width x height image, ids inside the label
        space). Applied by the converters, `gppf-shards verify` and `inspect`."""

    def draw(self, canvas: Canvas, sample: Sample, label_space: dict[str, Any]) -> list[str]:
        """Draw a checked sample's annotation on `canvas` (`gppf-shards inspect`); return the
        words of its caption (class, identity, counts...)."""

    def prepare(
        self, sample: Sample, spec: TaskSpec, train: bool, rng: np.random.Generator
    ) -> tuple[torch.Tensor, Any]:
        """Resize/augment to `spec.input_size`, keeping boxes, masks and keypoints consistent.

        Returns a 3xHxW uint8 image and this sample's target. Raises ValueError naming the
        sample key for annotations that are out of bounds or of the wrong schema (the sample is
        then skipped). A valid target that the geometry makes degenerate (a box cropped to
        nothing, a keypoint leaving the input) is dropped and counted in `sample.dropped`,
        never a reason to raise.
        """

    def collate(self, targets: list[Any]) -> Any: ...

    def build_head(self, in_channels: list[int], strides: list[int], spec: TaskSpec) -> nn.Module:
        """A head reading the backbone's multi-scale features (one entry per level)."""

    def loss(self, outputs: Any, targets: Any, groups: torch.Tensor) -> torch.Tensor:
        """Per-sample losses, shape [B]."""

    def new_metric(self, spec: TaskSpec) -> Metric: ...


def move_to(obj: Any, device: torch.device) -> Any:
    """Move tensors nested in dicts/lists/tuples to `device`.

    Copies to an accelerator are non-blocking (the stream orders them before any kernel reading
    them); copies to the host block: a non-blocking device-to-host copy returns before its bytes
    have landed, and the caller (a metric, `.numpy()`) would read them at once.
    """
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=torch.device(device).type != "cpu")
    if isinstance(obj, dict):
        return {k: move_to(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [move_to(v, device) for v in obj]
    if isinstance(obj, tuple):
        return tuple(move_to(v, device) for v in obj)
    return obj
