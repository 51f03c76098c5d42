"""Layer 2 — fine-tuning: a pre-trained backbone prepared for a downstream task, and the route
chosen for it."""
