"""Contender "kopf": the same handler for Kopf, run as ``kopf run --standalone -n NAMESPACE contender_kopf.py``.

Kubernetes events are not posted (nor by the opd contender); everything else is Kopf's default.
"""

from __future__ import annotations

import kopf


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: object) -> None:
    settings.posting.enabled = False


@kopf.on.create("kopfexamples")
def create_fn(**_: object) -> dict[str, str]:
    return {"message": "created"}
