"""Layer 3 — before any worker starts: config and data validation, the memory plan, the dry run."""
