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
from gppf_dist.tasks.registry import get_task_type

CONTRACT_NAME = "gppf_contract.json"
"""The name of the contract inside the exported file (`extra_files`) and its version below."""
VERSION = 1


def contract(
    spec: TaskSpec, batch: int, *, run: str = "", step: int | None = None
) -> dict[str, Any]:
    """The contract of `spec`'s exported program (`batch`: the size of the exported sample);
    its outputs are the task type's `export_outputs`."""
    outputs = dict(get_task_type(spec.type).export_outputs)
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
        "outputs": outputs,
        "label_space": spec.label_space,
    }


def contract_json(value: dict[str, Any]) -> str:
    return json.dumps(value, indent=1, sort_keys=False)
