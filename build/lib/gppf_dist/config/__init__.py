"""Layer 0 — typed configuration: the dataclass schema every other package reads (`schema.py`,
`model.py`), Hydra composition into it (`load.py`, `store.py`), hostfiles. No other package sees
a DictConfig; a user error is a ValueError naming the key and value."""
