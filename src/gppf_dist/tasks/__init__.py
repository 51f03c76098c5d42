"""Layer 0 — task types, each whole in one file: label space, sample schema, drawing, preparing
samples (augmentation, targets), heads, per-sample losses, metrics and export outputs
(`base.py` defines the `TaskType` protocol; `registry.py` registers the seven built-in types and
any of your own, loaded through `plugins=[...]`)."""
