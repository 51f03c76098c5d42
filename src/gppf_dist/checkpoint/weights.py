"""A checkpoint's model weights alone, for tools (`gppf-extract`): no engine, no optimizer.

From the topology-free files when the checkpoint has them (`named_state.py`, whatever expert-
parallel layout saved it), else from DeepSpeed's module file (`layout.DEEPSPEED_MODULE_FILE`, key
`module`), read with `torch.load(weights_only=True)`, allow-listing the types the client state
saved beside the weights pickles (data positions and numpy arrays).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from gppf_dist.checkpoint.layout import DEEPSPEED_MODULE_FILE
from gppf_dist.checkpoint.named_state import has_named_state, load_named_state
from gppf_dist.model.owners import OwnerMap


def _client_state_globals() -> list[Any]:
    import numpy as np

    from gppf_dist.data.load.streams import StreamPosition

    reconstruct = np._core.multiarray._reconstruct  # type: ignore[attr-defined]
    dtypes = [type(np.dtype(t)) for t in ("int64", "int32", "uint32", "float64", "float32")]
    return [StreamPosition, np.ndarray, np.dtype, reconstruct, *dtypes]


def load_weights(model: nn.Module, owners: OwnerMap, tag_dir: Path) -> None:
    """Load every parameter and buffer of `model` from the checkpoint in `tag_dir`."""
    if has_named_state(tag_dir):
        load_named_state(model, None, owners, tag_dir)
        return
    with torch.serialization.safe_globals(_client_state_globals()):
        states = torch.load(tag_dir / DEEPSPEED_MODULE_FILE, map_location="cpu", weights_only=True)
    model.load_state_dict(states["module"])
