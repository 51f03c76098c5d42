"""Layer 1 — expert parallelism for lego units: the pure layout (`plan.py`), the dispatch of lego
calls between ranks (`expert.py`, `all_to_all.py`) and placement of legos by routes."""
