"""The demo task set (8 tasks over 7 types at CPU sizes) and random synthetic batches for it.

Used by tests and benchmarks that need every task type without shards: `demo_specs()` gives the
reference composition of DESIGN.md §2 at the demo input sizes; `synthetic_batch` draws uint8
images and already-collated targets of the right schema from a `torch.Generator`.
"""

from __future__ import annotations

from typing import Any

import torch

from gppf_dist.tasks.base import TaskSpec
from gppf_dist.tasks.registry import make_spec

KEYPOINTS = [
    "nose",
    "left_eye",
    "right_eye",
    "left_shoulder",
    "right_shoulder",
    "left_hip",
    "right_hip",
]

DEMO_TASKS: dict[str, tuple[str, tuple[int, int], dict[str, Any]]] = {
    "cls_object": ("classification", (64, 64), {"classes": [f"obj{i}" for i in range(10)]}),
    "cls_scene": ("classification", (64, 64), {"classes": [f"scene{i}" for i in range(6)]}),
    "det": ("detection", (96, 96), {"classes": ["circle", "square", "triangle"]}),
    "seg": ("segmentation", (64, 64), {"classes": ["bg", "circle", "square", "triangle"]}),
    "pose": ("pose", (64, 48), {"keypoints": KEYPOINTS, "skeleton": [[1, 2], [3, 4], [5, 6]]}),
    "reid": ("reid", (64, 32), {"num_identities": 16}),
    "face": ("face", (48, 48), {"num_identities": 16}),
    "attr": ("attributes", (64, 32), {"attributes": ["hat", "bag", "long_hair", "skirt"]}),
}


def demo_specs() -> dict[str, TaskSpec]:
    """The 8 demo tasks, in a fixed order."""
    return {name: make_spec(name, t, size, space) for name, (t, size, space) in DEMO_TASKS.items()}


def _boxes(batch: int, h: int, w: int, per_image: int, gen: torch.Generator) -> torch.Tensor:
    size = torch.rand(batch, per_image, 2, generator=gen) * 0.4 + 0.2
    start = torch.rand(batch, per_image, 2, generator=gen) * (1 - size)
    scale = torch.tensor([w, h], dtype=torch.float32)
    return torch.cat([start * scale, (start + size) * scale], dim=-1)


def _colour(c: int, n: int) -> torch.Tensor:
    """A distinct uint8 RGB colour for class `c` of `n`."""
    hue = torch.tensor([c / n, c / n + 1 / 3, c / n + 2 / 3]) * 2 * torch.pi
    return ((torch.cos(hue) + 1) * 127.5).to(torch.uint8)


def synthetic_batch(spec: TaskSpec, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, Any]:
    """(B x 3 x H x W uint8 images, collated targets) with random but valid labels."""
    h, w = spec.input_size
    images = torch.randint(0, 256, (batch, 3, h, w), dtype=torch.uint8, generator=gen)
    n = spec.num_classes
    if spec.type == "classification":
        return images, {"label": torch.randint(0, n, (batch,), generator=gen)}
    if spec.type == "attributes":
        attrs = torch.randint(0, 2, (batch, spec.num_attributes), generator=gen).float()
        return images, {"attributes": attrs}
    if spec.type == "detection":
        labels = torch.randint(0, n, (batch, 2), generator=gen)
        boxes = _boxes(batch, h, w, 2, gen)
        for b in range(batch):  # paint each object in its class colour
            for (x1, y1, x2, y2), c in zip(boxes[b].round().int().tolist(), labels[b], strict=True):
                images[b, :, y1:y2, x1:x2] = _colour(int(c), n)[:, None, None]
        return images, {"boxes": boxes, "labels": labels}
    if spec.type == "segmentation":
        coarse = torch.randint(0, n, (batch, 1, 4, 4), generator=gen).float()
        mask = torch.nn.functional.interpolate(coarse, size=(h, w), mode="nearest")[:, 0].long()
        palette = torch.stack([_colour(c, n) for c in range(n)])  # [n, 3]
        images = (images // 2 + palette[mask].permute(0, 3, 1, 2) // 2).to(torch.uint8)
        return images, {"mask": mask}
    if spec.type == "pose":
        k = spec.num_keypoints
        xy = torch.rand(batch, k, 2, generator=gen) * torch.tensor([w - 1.0, h - 1.0])
        vis = torch.randint(0, 3, (batch, k, 1), generator=gen).float()
        box = torch.tensor([0.0, 0.0, float(w), float(h)]).expand(batch, 4).clone()
        return images, {"keypoints": torch.cat([xy, vis], -1), "box": box}
    identity = torch.randint(0, n, (batch,), generator=gen)
    if spec.type == "reid":
        camera = torch.randint(0, 3, (batch,), generator=gen)
        return images, {"identity": identity, "camera": camera}
    if spec.type == "face":
        return images, {"identity": identity, "key_hash": torch.arange(batch)}
    raise ValueError(f"`spec.type`={spec.type!r} has no synthetic batch")
