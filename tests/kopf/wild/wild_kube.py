"""The harness's own small API client: plain HTTPS to the local control plane, synchronous, with
nothing of opd's or Kopf's in it, so that what it sees does not depend on what is being judged.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

CORE = "v1"


def path_of(api_version: str, plural: str, namespace: str | None = None, name: str | None = None) -> str:
    """The REST path of a collection or an object: ``v1`` is the core group, ``group/version`` any other."""
    base = f"/api/{api_version}" if api_version == CORE else f"/apis/{api_version}"
    if namespace is not None:
        base += f"/namespaces/{namespace}"
    base += f"/{plural}"
    return base + (f"/{name}" if name else "")


class Kube:
    def __init__(self, server: str, token: str, ca_file: Path) -> None:
        self.server = server.rstrip("/")
        self.token = token
        self.context = ssl.create_default_context(cafile=str(ca_file))

    def call(self, method: str, path: str, body: Any = None, *,
             content_type: str = "application/json") -> Any:
        """One request; the parsed answer, or None for a 404 (what is missing is what checks ask)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.server + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=30) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            detail = exc.read()[:300].decode(errors="replace")
            raise RuntimeError(f"{method} {path}: HTTP {exc.code}: {detail}") from None
        return json.loads(raw) if raw else None

    def get(self, api_version: str, plural: str, namespace: str | None, name: str) -> Any:
        return self.call("GET", path_of(api_version, plural, namespace, name))

    def list(self, api_version: str, plural: str, namespace: str | None = None,
             selector: str | None = None) -> list[dict[str, Any]]:
        path = path_of(api_version, plural, namespace)
        if selector:
            path += "?labelSelector=" + urllib.request.quote(selector)
        answer = self.call("GET", path)
        return list(answer["items"]) if answer else []

    def create(self, body: dict[str, Any]) -> Any:
        kind_plural = plural_of(body["kind"])
        namespace = body["metadata"].get("namespace")
        path = path_of(body["apiVersion"], kind_plural, namespace)
        created = self.call("POST", path, body)
        if created is None:  # a 404: no such collection (a plural guessed wrong), never a creation
            raise RuntimeError(f"POST {path}: HTTP 404: no such collection for kind {body['kind']}")
        return created

    def patch(self, api_version: str, plural: str, namespace: str | None, name: str, body: Any) -> Any:
        return self.call("PATCH", path_of(api_version, plural, namespace, name), body,
                         content_type="application/merge-patch+json")

    def delete(self, api_version: str, plural: str, namespace: str | None, name: str) -> Any:
        return self.call("DELETE", path_of(api_version, plural, namespace, name))

    def namespace(self, name: str) -> None:
        self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    def crd(self, body: dict[str, Any], timeout: float = 30.0) -> None:
        """Create a CustomResourceDefinition (again: a 409 is fine) and wait until it is served."""
        try:
            self.create(body)
        except RuntimeError as exc:
            if "HTTP 409" not in str(exc):
                raise
        name = body["metadata"]["name"]
        wait(lambda: _established(self.get("apiextensions.k8s.io/v1", "customresourcedefinitions", None, name)),
             timeout, f"CRD {name} established")


def _established(crd: Any) -> bool:
    conditions = (crd or {}).get("status", {}).get("conditions", [])
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


# Kinds the scenarios create by hand, and their plurals (the harness creates nothing else).
_PLURALS = {"Namespace": "namespaces", "ConfigMap": "configmaps", "Secret": "secrets",
            "CustomResourceDefinition": "customresourcedefinitions",
            "ChaosToolkitExperiment": "chaosexperiments"}


def plural_of(kind: str) -> str:
    return _PLURALS.get(kind) or kind.lower() + "s"


class Missed(Exception):
    """An expected effect did not show within its bound: the message says which."""


def wait(condition: Callable[[], Any], timeout: float, what: str, *,
         alive: Callable[[], str | None] | None = None) -> Any:
    """Poll until ``condition()`` is truthy (its value is returned), else raise Missed(what).

    ``alive`` returns why the operator is gone (it exited), so that a dead operator fails at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except (KeyError, TypeError, IndexError):
            value = None
        if value:
            return value
        gone = alive() if alive else None
        if gone:
            raise Missed(f"{what}: {gone}")
        if time.monotonic() > deadline:
            raise Missed(f"{what} (not within {timeout:.0f} s)")
        time.sleep(0.3)
