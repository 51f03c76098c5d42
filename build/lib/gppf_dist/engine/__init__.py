"""Layer 3 — training: the one place a step is assembled (`assemble.py`), the step itself
(`step.py`) and its reduction strategies (`reduction.py`), DeepSpeed behind one module
(`deepspeed.py`), optimizers, precision, timing, host-sync checks, evaluation, validation before
start, and the worker in three acts (`worker.py`: build, train, finish)."""
