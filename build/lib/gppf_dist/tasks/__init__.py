"""Layer 1 — the eight task types: preparing samples (augmentation, targets), heads, per-sample
losses and metrics (`base.py` defines the `TaskType` protocol; `registry.py` maps names)."""
