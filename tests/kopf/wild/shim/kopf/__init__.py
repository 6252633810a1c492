"""A stand-in package named ``kopf`` that is opd: put this folder first on PYTHONPATH and an
operator written for Kopf imports opd without a changed line (used by tests/kopf/wild/run.py only).

Every public name of opd is re-exported; ``kopf.on``, ``kopf.testing`` and the other submodules
that Kopf documents resolve to opd's. A name opd lacks raises the usual AttributeError or
ImportError, which is what the harness reports.
"""

from __future__ import annotations

import sys

import opd
import opd.on
import opd.testing

globals().update({name: getattr(opd, name) for name in dir(opd) if not name.startswith("__")})

# ``import kopf.on`` / ``from kopf.testing import KopfRunner`` find opd's modules.
for _name, _module in {"on": opd.on, "testing": opd.testing}.items():
    sys.modules[f"{__name__}.{_name}"] = _module
    globals()[_name] = _module
