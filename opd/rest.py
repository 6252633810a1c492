"""Plain-dict requests to the Kubernetes API, for a handler's or a plugin's own calls with the operator's
credentials (the ``api`` kwarg): any resource by its path, dict bodies in, dict answers out, no model classes.

Part of opd's public API (with ``opd``, ``opd.plugin``, ``opd.testing`` and ``opd.toolkits``): what a plugin may
rely on across releases. ``opd.kube`` behind it is internal.
"""

from opd.kube.plain import MERGE_PATCH, being_terminated, request

__all__ = ["MERGE_PATCH", "being_terminated", "request"]
