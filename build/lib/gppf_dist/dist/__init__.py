"""Layer 0 — the process world: environment and device (`env.py`, `hostlist.py`), the one place
sub-process-groups are created (`mesh.py`), and spawning local rank processes (`spawn.py`).
Knows nothing of models or tasks; upper layers pass it plain layouts (`mesh.GroupLayout`)."""
