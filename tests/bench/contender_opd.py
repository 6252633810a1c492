"""Contender "opd": one on.create handler returning a small dict, stored as .status.create_fn.

Kubernetes events are not posted, as for Kopf; everything else is opd's default.
Usage: ``python contender_opd.py NAMESPACE`` with $KUBECONFIG set.
"""

from __future__ import annotations

import sys

import opd


@opd.on.create("kopfexamples")
def create_fn(**_: object) -> dict[str, str]:
    return {"message": "created"}


def settings() -> opd.OperatorSettings:
    chosen = opd.OperatorSettings()
    chosen.posting.enabled = False
    return chosen


if __name__ == "__main__":
    opd.run(namespaces=[sys.argv[1]], settings=settings())
