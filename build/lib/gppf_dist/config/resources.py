"""Files the package ships and reads at run time: the Hydra config tree and the sbatch script.

Both live inside the package (`gppf_dist/conf/`, `gppf_dist/launch/gppf.sbatch`; the checkout's
top-level `conf/` and `launch/slurm/gppf.sbatch` are links to them), so an installed wheel finds
them from any folder. A user's own config tree replaces ours through `GPPF_CONF_DIR` (Hydra's
`--config-dir` adds one beside it).
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
SBATCH_SCRIPT = PACKAGE_DIR / "launch" / "gppf.sbatch"
"""The sbatch script `launcher=slurm` submits (`$GPPF_SBATCH_SCRIPT` replaces it)."""


def conf_dir() -> Path:
    """The config tree: `$GPPF_CONF_DIR`, else the one in the package."""
    return Path(os.environ.get("GPPF_CONF_DIR") or PACKAGE_DIR / "conf")


def model_yaml(name: str) -> Path:
    """`conf/model/<name>.yaml` of the config tree."""
    return conf_dir() / "model" / f"{name}.yaml"
