"""Layer 2 — the checkpoint format, whole: save and restore (`store.py`, through an `EngineState`
protocol), the topology-free files by owner (`named_state.py`), the COMPLETE marker
(`marker.py`, read only by `read_marker`), typed client state and RNG (`client_state.py`),
which layouts a checkpoint resumes at (`topology.py`), tags, LATEST and retention
(`manager.py`), and weights for tools (`weights.py`)."""
