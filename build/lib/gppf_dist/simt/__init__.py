"""Layer 1 — SIMT, the method: the active task set and planning policy (`taskset.py`), pure
planners that assign task streams to ranks (`plan.py`, `costs.py`), the scaled local objective
(`objective.py`) and the exact grouped gradient reduction (`reduce.py`)."""
