"""Layer 5 — the command-line entry points (`gppf-train`, `gppf-shards`, `gppf-bench`,
`gppf-model`, `gppf-extract`) and the worker process entry; Hydra runs here only."""
