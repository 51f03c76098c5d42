"""The contract of a `gppf-extract` program: what goes in, what comes out, what each key means.

Written as JSON into the exported file (`torch.export.save(..., extra_files={CONTRACT_NAME: ...})`)
and beside it as `FILE.json`, so a user of the program needs neither gppf_dist nor this
repository to call it correctly. Shapes use B (batch: any size >= 1, the exported batch
dimension is dynamic), H×W (the task's input size: fixed), C (classes), A (locations over all
detection levels), K (keypoints), D (embedding width), N (identities or attributes).
"""

from __future__ import annotations

import json
from typing import Any

from gppf_dist.tasks.base import TaskSpec

CONTRACT_NAME = "gppf_contract.json"
"""The name of the contract inside the exported file (`extra_files`) and its version below."""
VERSION = 1

OUTPUTS: dict[str, dict[str, str]] = {
    "classification": {
        "": "logits [B, C] over label_space.classes (softmax for probabilities)",
    },
    "attributes": {
        "": "logits [B, N] one per label_space.attributes (sigmoid > 0.5: present)",
    },
    "detection": {
        "cls": "class logits [B, A, C] per location (score = sqrt(sigmoid(cls) * sigmoid(ctr)))",
        "reg": "distances [B, A, 4] left, top, right, bottom from the location, input pixels",
        "ctr": "centerness logit [B, A] per location",
        "points": "location centres [A, 2] (x, y) in input pixels: box = points -/+ reg",
        "strides": "pyramid stride [A] of each location",
        "ranges": "box size range [A, 2] each location was trained for",
    },
    "segmentation": {
        "": "logits [B, C, H, W] per pixel at the input size (argmax: class id)",
    },
    "pose": {
        "heatmaps": "heatmaps [B, K, h, w] at the decoder's stride, one per label_space "
        "keypoint; pixel (u, v) is input point ((u + 0.5) * W / w - 0.5, (v + 0.5) * H / h - 0.5)",
    },
    "reid": {
        "feat": "pooled feature [B, D] (what the triplet loss sees)",
        "emb": "embedding [B, D] for retrieval: compare by cosine similarity",
        "logits": "identity logits [B, N] over the training identities",
    },
    "face": {
        "emb": "embedding [B, D] for verification: compare by cosine similarity",
        "cos": "cosines [B, N] to the training identities' class centres",
    },
}
"""Per task type, each output key and its meaning; "" for a head that returns one tensor."""


def contract(
    spec: TaskSpec, batch: int, *, run: str = "", step: int | None = None
) -> dict[str, Any]:
    """The contract of `spec`'s exported program (`batch`: the size of the exported sample)."""
    if spec.type not in OUTPUTS:
        raise ValueError(f"`task type`={spec.type!r} has no output contract ({sorted(OUTPUTS)})")
    h, w = (int(v) for v in spec.input_size)
    return {
        "version": VERSION,
        "task": spec.name,
        "type": spec.type,
        "run": run,
        "step": step,
        "input": {
            "dtype": "uint8",
            "layout": "B x 3 x H x W, RGB, values 0-255 (the program normalises them itself)",
            "shape": ["B", 3, h, w],
            "batch": "dynamic: any B >= 1",
            "size": f"fixed: H = {h}, W = {w} (resize or crop to it first)",
            "sample_batch": batch,
        },
        "outputs": OUTPUTS[spec.type],
        "label_space": spec.label_space,
    }


def contract_json(value: dict[str, Any]) -> str:
    return json.dumps(value, indent=1, sort_keys=False)
