"""Layer 4 — starting workers: locally (torch elastic), with the DeepSpeed launcher, or under
Slurm; the resolved config travels to every worker as a file."""
