"""Chaos scenarios: an operator must lose no event through the faults real clusters have (run.py)."""
