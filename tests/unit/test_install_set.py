"""What `make wheelhouse-gpu-check` leaves out (`tools/wheelhouse.py`'s "gpu-check" set) is never
imported on gpu-check's paths: the training step, the task types' train-time preparation and
the benchmarks run without W&B."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from gppf_dist.tasks.demo import demo_specs

LEFT_OUT = ("wandb",)

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
    import gppf_dist.bench.gpu_check, gppf_dist.engine.worker, gppf_dist.cli.train
    from gppf_dist.tasks.demo import demo_specs
    from gppf_dist.tasks.registry import get_task_type, make_spec
    from gppf_dist.data.synth import write_synthetic_corpus
    import tempfile, pathlib
    from gppf_dist.data.manifest import load_manifest
    from gppf_dist.data.decode import decode_sample, read_shard
    """
)


def test_the_set_gpu_check_installs_is_enough() -> None:
    code = SCRIPT.format(left_out=set(LEFT_OUT)) + textwrap.dedent(
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
