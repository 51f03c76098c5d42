"""Layer 5 — one-off experiments that drive the CLIs or compare approaches (transfer to the
downstream suite, COCO annotation memory); not part of a training run."""
