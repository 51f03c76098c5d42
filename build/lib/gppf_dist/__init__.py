"""gppf_dist: distributed multi-task pre-training of GPPF."""
