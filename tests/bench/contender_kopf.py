"""Contender "kopf": the same handler for Kopf, run as ``kopf run --standalone -n NAMESPACE contender_kopf.py``.

Kubernetes events are not posted (nor by the opd contender); ``BENCH_FIRST_LIST=FILE`` notes the CPU spent
by the first LIST (firstlist.py); everything else is Kopf's default.
"""

from __future__ import annotations

import sys
from pathlib import Path

import kopf

sys.path.insert(0, str(Path(__file__).resolve().parent))  # Kopf loads this file by path, its siblings unseen
import firstlist

firstlist.install()  # loaded before the operator starts: before its first request


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: object) -> None:
    settings.posting.enabled = False


@kopf.on.create("kopfexamples")
def create_fn(**_: object) -> dict[str, str]:
    return {"message": "created"}
