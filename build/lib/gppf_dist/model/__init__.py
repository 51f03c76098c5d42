"""Layer 1 — GPPF itself, with no notion of distribution: backbones whose layers hold lego units
(`resnet.py`, `vit.py`, `lego.py`), the per-task router (`router.py`), the multi-head model
(`build.py`), who owns each parameter (`owners.py`), dense extraction and summaries."""
