"""Layer 2 — the checkpoint format, whole: save and restore (`store.py`, through an `EngineState`
protocol), how a failed save is told (`saving.py`), the topology-free files by owner
(`named_state.py`), the COMPLETE marker (`marker.py`, read only by `read_marker`) with every
file's size and checksum (`digest.py`), verifying a checkpoint against it (`verify.py`), typed
client state and RNG (`client_state.py`), which layouts a checkpoint resumes at (`topology.py`),
tags, LATEST, retention and the newest intact checkpoint (`manager.py`), and weights for tools
(`weights.py`)."""
