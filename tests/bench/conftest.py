"""The benchmarks are a program (run.py), not tests: pytest collects nothing in this folder."""

collect_ignore_glob = ["*"]
