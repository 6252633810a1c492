"""Plain-dict requests over a kubernetes_asyncio ``ApiClient``: the ``api`` kwarg of handlers.

For a handler's (or a plugin's) own API calls with the operator's credentials: any resource by
its path, dict bodies in, dict answers out, no model classes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opd.kube.api import JSON, MERGE_PATCH

if TYPE_CHECKING:  # at run time the caller brings the client: importing it costs every model
    from kubernetes_asyncio import client

__all__ = ["MERGE_PATCH", "being_terminated", "request"]

_ANSWERS = {code: "object" for code in (200, 201, 202)}  # keyed by the int status


async def request(api: client.ApiClient | Any, method: str, path: str, *, body: Any = None,
                  query: dict[str, str] | None = None, content_type: str = JSON) -> dict[str, Any]:
    """One API request; raises ``kubernetes_asyncio.client.ApiException`` for an error status."""
    answer: dict[str, Any] = await api.call_api(
        path, method, query_params=list((query or {}).items()),
        header_params={"Accept": JSON, "Content-Type": content_type},
        body=body, response_types_map=_ANSWERS, auth_settings=["BearerToken"], _return_http_data_only=True)
    return answer


def being_terminated(exc: client.ApiException) -> bool:
    """403 from the NamespaceLifecycle admission: no new objects in a namespace being deleted."""
    return exc.status == 403 and "being terminated" in str(exc.body or "")
