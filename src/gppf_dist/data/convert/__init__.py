"""Conversion of public datasets into shards: `gppf-shards convert` and `build`, the layout readers
(`layouts/`), MXNet RecordIO, the corpus spec (`specs/`)."""
