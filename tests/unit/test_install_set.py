"""What `make wheelhouse-gpu-check` leaves out (`tools/wheelhouse.py`'s "gpu-check" set) is never
imported on gpu-check's paths: the training step, the task types' train-time preparation and
the benchmarks run without W&B (nor its workspace API, which only `gppf-wandb` uses), without
SciPy (only the pedestrian `.mat` layout reads it) and without OpenCV (the pixel kernels' torch
path). Nor is anything the project no longer depends on (albumentations): a `.venv` that still
holds it must not hide an import of it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from gppf_dist.tasks.demo import demo_specs

LEFT_OUT = {
    "wandb": "wandb",
    "wandb-workspaces": "wandb_workspaces",
    "scipy": "scipy",
    "opencv-python-headless": "cv2",
}
"""Distribution → the module it installs."""
NOT_DEPENDENCIES = ("albumentations", "albucore")
WHEELHOUSE = Path(__file__).resolve().parents[2] / "tools" / "wheelhouse.py"

SCRIPT = textwrap.dedent(
    """
    import importlib.abc, sys

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {left_out!r}:
                raise ImportError(f"{{name}} is not in gpu-check's wheels")
            return None

    sys.meta_path.insert(0, Refuse())
    import numpy as np
    from gppf_dist.tasks.common import pixels
    assert pixels.BACKEND == "torch", pixels.BACKEND
    import gppf_dist.bench.gpu_check, gppf_dist.engine.worker, gppf_dist.cli.train
    from gppf_dist.tasks.demo import demo_specs
    from gppf_dist.tasks.registry import get_task_type, make_spec
    from gppf_dist.data.synth.corpus import write_synthetic_corpus
    import tempfile, pathlib
    from gppf_dist.data.format.manifest import load_manifest
    from gppf_dist.data.decode.sample import decode_sample, read_shard
    """
)


def test_the_set_gpu_check_installs_is_enough() -> None:
    code = SCRIPT.format(left_out={*LEFT_OUT.values(), *NOT_DEPENDENCIES}) + textwrap.dedent(
        """
        specs = demo_specs()
        with tempfile.TemporaryDirectory() as tmp:
            root = pathlib.Path(tmp)
            write_synthetic_corpus(root, samples_per_task=4, val_per_task=4)
            done = set()
            for name, task in load_manifest(root).tasks.items():
                size = specs[name].input_size
                spec = make_spec(name, task.type, size, task.label_space)
                task_type = get_task_type(task.type)
                for raw in read_shard(root / task.splits["train"][0].path).samples:
                    sample = decode_sample(raw, needs_mask=task.type == "segmentation")
                    task_type.prepare(sample, spec, True, np.random.default_rng(0))
                    done.add(name)
        print(sorted(done))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == str(sorted(demo_specs())), proc.stdout


def _tool() -> Any:
    spec = importlib.util.spec_from_file_location("wheelhouse_tool", WHEELHOUSE)
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_the_list_above_is_the_wheelhouse_tool_s() -> None:
    assert _tool().SETS["gpu-check"] == set(LEFT_OUT)


def test_a_set_over_its_limit_for_one_python_is_refused(tmp_path: Path) -> None:
    tool = _tool()
    for name, mib in [
        ("numpy-2.4.6-cp312-cp312-manylinux_2_28_x86_64.whl", 16),
        ("numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl", 16),  # not 3.12's
        ("safetensors-0.8.0-cp310-abi3-manylinux_2_17_x86_64.whl", 1),
        ("deepspeed-0.19.8-py3-none-any.whl", 2),
    ]:
        with open(tmp_path / name, "wb") as f:
            f.truncate(mib * 2**20)
    tool.check_limit(tmp_path, ["3.12"], 19.5)  # 16 + 1 + 2
    with pytest.raises(SystemExit, match=r"19\.0 MiB for Python 3\.12, over its 18 MiB.*numpy"):
        tool.check_limit(tmp_path, ["3.12"], 18.0)
    assert tool.LIMIT_MIB["gpu-check"] == 48.0
