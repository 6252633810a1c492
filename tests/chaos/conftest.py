"""The chaos scenarios are a program (run.py), not tests: pytest collects nothing in this folder.
Their reduced versions run in the normal suite from tests/testing/test_chaos.py."""

collect_ignore_glob = ["*"]
