"""Benchmarks (a package only so that its conftest.py does not shadow tests/conftest.py)."""
