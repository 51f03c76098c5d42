"""Layer 3 — starting workers: the `Launcher` protocol and its registry (local through torch
elastic, the DeepSpeed launcher, Slurm, none: in this process; plugins add their own); the
resolved config travels to every worker as a file; how a worker process leaves."""
