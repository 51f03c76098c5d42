"""Layer 1 — data: the shard format and everything that writes or reads it, one subpackage per job.

- `format`: the manifest, annotation schemas, the reproducible tar writer, per-sample offsets
  and indexes, label mixes (documented in shards/README.md)
- `convert`: `gppf-shards convert` and `build` (the corpus spec in `convert/specs/`), the
  layout readers of public datasets (`convert/layouts/`), MXNet RecordIO
- `synth`: the synthetic 8-task corpus from one procedural world; the downstream suite
- `decode`: a sample's members to arrays; reduced JPEG decoding; nvJPEG on the device
- `load`: canonical streams (pure arithmetic), one stream's reader, worker processes, the train
  and eval loaders, a rank's loaders for its plan, prefetch to the device
- `tools`: `gppf-shards verify`, `inspect`, `subset`
"""
