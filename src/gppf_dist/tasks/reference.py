"""The reference task set of DESIGN.md §2 at full input sizes, for compute accounting.

Label-space sizes follow the public datasets each task is modelled on (ImageNet-1k, Places365,
COCO, ADE20K, COCO keypoints, Market-1501, a 10k-identity face set, PA-100K); they only change
head sizes. Detection uses an 800×800 input (the upper end of DESIGN.md's ~640–800).
"""

from __future__ import annotations

from typing import Any

from gppf_dist.tasks.base import TaskSpec
from gppf_dist.tasks.pose import COCO_KEYPOINTS
from gppf_dist.tasks.registry import make_spec


def _names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


REFERENCE_TASKS: dict[str, tuple[str, tuple[int, int], dict[str, Any]]] = {
    "cls_object": ("classification", (224, 224), {"classes": _names("c", 1000)}),
    "cls_scene": ("classification", (224, 224), {"classes": _names("s", 365)}),
    "det": ("detection", (800, 800), {"classes": _names("d", 80)}),
    "seg": ("segmentation", (512, 512), {"classes": _names("k", 150)}),
    "pose": ("pose", (256, 192), {"keypoints": COCO_KEYPOINTS, "skeleton": []}),
    "reid": ("reid", (256, 128), {"num_identities": 751}),
    "face": ("face", (112, 112), {"num_identities": 10000}),
    "attr": ("attributes", (256, 192), {"attributes": _names("a", 26)}),
}


def reference_specs() -> dict[str, TaskSpec]:
    """The 8 reference tasks at their reference input sizes, in a fixed order."""
    return {
        name: make_spec(name, t, size, space) for name, (t, size, space) in REFERENCE_TASKS.items()
    }
