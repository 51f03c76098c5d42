"""Where a run's checkpoints live and what each checkpoint folder holds: every name of the
layout, in one module.

    <run.dir>/checkpoints/            checkpoints_dir(run.dir)
        LATEST                        the newest complete tag, replaced atomically
        step_00000040/                tag_for_step(40)
            COMPLETE                  the marker, written last (`marker.py`)
            mp_rank_00_model_states.pt    DeepSpeed's module states (DEEPSPEED_MODULE_FILE)
            ...                       DeepSpeed's optimizer files
            gppf/                     NAMED_DIR: the topology-free files (`named_state.py`)
                shared.pt             shared parameters, buffers, their optimizer state
                lego_LL_II.pt         one per lego (layer LL, lego II)
                zero_RRRRR.pt         ZeRO partitions by rank (`zero_state.py`)
"""

from __future__ import annotations

import re
from pathlib import Path

CHECKPOINTS = "checkpoints"
"""The folder of a run's checkpoints inside `run.dir`."""
LATEST = "LATEST"
COMPLETE = "COMPLETE"
NAMED_DIR = "gppf"
"""The topology-free files' folder inside a checkpoint (`named_state.py`)."""
SHARED_FILE = "shared.pt"
DEEPSPEED_MODULE_FILE = "mp_rank_00_model_states.pt"
"""The file DeepSpeed's engine writes the module's state dict into (key `module`): the name it
gives model-parallel rank 0, the only one we use. Written by DeepSpeed, read here by tools
without an engine (`weights.py`); `tests/integration/test_train_cli.py` checks that a real save
writes it."""
TAG = re.compile(r"^step_(\d{8})$")


def checkpoints_dir(run_dir: str | Path) -> Path:
    """Where the run in `run_dir` keeps its checkpoints (one folder per tag)."""
    return Path(run_dir) / CHECKPOINTS


def tag_for_step(step: int) -> str:
    return f"step_{step:08d}"


def lego_file(layer: int, lego: int) -> str:
    return f"lego_{layer:02d}_{lego:02d}.pt"


def partition_file(rank: int) -> str:
    return f"zero_{rank:05d}.pt"
