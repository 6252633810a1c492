"""The KopfExample CRD that opd's tests (and Kopf's examples) use, and the API helpers to install it."""

from __future__ import annotations

from typing import Any

from opd.testing.fixtures import ensure_crd, make_api

__all__ = ["CRD_GROUP", "CRD_PLURAL", "KOPFEXAMPLE_CRD", "ensure_crd", "make_api"]

CRD_GROUP = "kopf.dev"
CRD_PLURAL = "kopfexamples"

KOPFEXAMPLE_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{CRD_PLURAL}.{CRD_GROUP}"},
    "spec": {
        "group": CRD_GROUP,
        "scope": "Namespaced",
        "names": {
            "plural": CRD_PLURAL,
            "singular": "kopfexample",
            "kind": "KopfExample",
            "shortNames": ["kex"],
        },
        "versions": [{
            "name": "v1",
            "served": True,
            "storage": True,
            "subresources": {"status": {}},
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
            }},
        }],
    },
}
