"""Layer 1 — data: webdataset shards, their manifest, the synthetic corpus and the loaders.

- `manifest`: `Manifest`/`TaskManifest`/`ShardInfo`, `load_manifest`, `save_manifest`
- `writer`: `ShardWriter` (reproducible tars)
- `synth`: `write_synthetic_corpus` (all 8 tasks from one procedural world)
- `streams`: canonical-stream arithmetic (pure), `StreamPosition`
- `loader`: `TaskLoader` (train, resumable) and `iter_eval_batches` (one eval pass)
- `stream_reader`, `workers`: one stream's reader; worker processes with the same semantics
- `task_loaders`, `prefetch`: a rank's loaders for its planned work; batches on the device early
- `schema`, `verify`: annotation schemas per task type; `gppf-shards verify`
- `convert`, `convert_parallel`: `gppf-shards convert` (shuffled, whole shards per process,
  resumable); `convert_layouts` names the readers in `layouts/` (`recordio`: MXNet RecordIO)
- `label_mix`: how far a shard's label mix is from its task's (`gppf-shards verify` warns)

The format is documented in shards/README.md.
"""

from gppf_dist.data.loader import TaskLoader, iter_eval_batches
from gppf_dist.data.manifest import Manifest, ShardInfo, TaskManifest, load_manifest, save_manifest
from gppf_dist.data.streams import StreamPosition
from gppf_dist.data.synth import write_synthetic_corpus
from gppf_dist.data.writer import ShardWriter

__all__ = [
    "Manifest",
    "ShardInfo",
    "ShardWriter",
    "StreamPosition",
    "TaskLoader",
    "TaskManifest",
    "iter_eval_batches",
    "load_manifest",
    "save_manifest",
    "write_synthetic_corpus",
]
