"""A kubernetes_asyncio client for the plugin's own API calls, and plain-dict requests over it.

The client is opd's own (the ``api`` kwarg of handlers): the cluster and credentials the daemon
was configured with. Requests go through ``call_api`` with dict bodies and dict answers:
no model classes, and any resource by its path.
"""

from __future__ import annotations

from typing import Any

from kubernetes_asyncio import client

MERGE_PATCH = "application/merge-patch+json"
_ANSWERS = {code: "object" for code in (200, 201, 202)}  # keyed by the int status


async def request(api: client.ApiClient, method: str, path: str, *, body: Any = None,
                  query: dict[str, str] | None = None, content_type: str = "application/json") -> dict[str, Any]:
    """One API request; raises ``kubernetes_asyncio.client.ApiException`` for an error status."""
    answer: dict[str, Any] = await api.call_api(
        path, method, query_params=list((query or {}).items()),
        header_params={"Accept": "application/json", "Content-Type": content_type},
        body=body, response_types_map=_ANSWERS, auth_settings=["BearerToken"], _return_http_data_only=True)
    return answer


def being_terminated(exc: client.ApiException) -> bool:
    """403 from the NamespaceLifecycle admission: no new objects in a namespace being deleted."""
    return exc.status == 403 and "being terminated" in str(exc.body or "")
