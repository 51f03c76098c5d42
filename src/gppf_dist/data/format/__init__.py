"""The shard format: manifest, annotation schemas, the tar writer, per-sample offsets and indexes,
label mixes (shards/README.md)."""
