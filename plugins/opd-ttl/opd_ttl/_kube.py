"""A kubernetes_asyncio client for the plugin's own API calls, and plain-dict requests over it.

opd does not hand its own connection to handlers, so the plugin opens one in a startup handler.
Credentials are found in opd's order: $KUBECONFIG when set, the in-cluster service account in a
pod, else ~/.kube/config. Requests go through ``call_api`` with dict bodies and dict answers:
no model classes, and any resource by its path.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, config

_ANSWERS = {code: "object" for code in (200, 201, 202)}  # keyed by the int status


async def connect() -> client.ApiClient:
    cfg = client.Configuration()
    kubeconfig = os.environ.get("KUBECONFIG")
    if not kubeconfig and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    else:
        # Explicit path: kubernetes_asyncio reads $KUBECONFIG once, at import, for its default.
        path = kubeconfig or str(Path.home() / ".kube" / "config")
        await config.load_kube_config(config_file=path, client_configuration=cfg, persist_config=False)
    return client.ApiClient(configuration=cfg)


async def request(api: client.ApiClient, method: str, path: str, *, body: Any = None,
                  query: dict[str, str] | None = None, content_type: str = "application/json") -> dict[str, Any]:
    """One API request; raises ``kubernetes_asyncio.client.ApiException`` for an error status."""
    answer: dict[str, Any] = await api.call_api(
        path, method, query_params=list((query or {}).items()),
        header_params={"Accept": "application/json", "Content-Type": content_type},
        body=body, response_types_map=_ANSWERS, auth_settings=["BearerToken"], _return_http_data_only=True)
    return answer
