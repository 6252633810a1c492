"""Contender "opd": the same handler for opd, run as ``opd run -n NAMESPACE contender_opd.py``.

Kubernetes events are not posted (nor by the Kopf contender); everything else is opd's default.
"""

from __future__ import annotations

import opd


@opd.on.startup()
def configure(settings: opd.OperatorSettings, **_: object) -> None:
    settings.posting.enabled = False


@opd.on.create("kopfexamples")
def create_fn(**_: object) -> dict[str, str]:
    return {"message": "created"}
