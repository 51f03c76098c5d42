"""Synthetic corpora: the 8-task demo corpus drawn from one procedural world, its people, and the
downstream suite."""
