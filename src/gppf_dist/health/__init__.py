"""Layer 1 — a worker's health: the watchdog and its heartbeats, naming the rank a stalled
collective waits for; non-finite steps; preemption signals."""
