"""Talking to the Kubernetes API: credentials, raw requests and watch streams, discovery."""
