"""Layer 2 — what a run reports: the metrics record of a step (`record.py`), metrics.jsonl
(`metrics.py`), W&B online/offline runs (`wandb_run.py`, `wandb_file.py`), the lego-usage heatmap
and atomically written run files (`run_files.py`)."""
