"""Qdrant Kubernetes Operator."""
