"""Tools over a corpus: `gppf-shards verify`, `inspect` and `subset`."""
