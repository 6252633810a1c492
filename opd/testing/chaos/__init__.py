"""A fault-injection kit: show that an operator loses no event through the faults real clusters have.

Building blocks, for opd's own chaos scenarios (``tests/chaos/run.py``) and for plugin authors:

- ``OperatorProcess``: an operator as a child process (``python -m opd run handlers.py ...`` by default),
  stopped by its PID: ``sigkill()``, ``sigterm()``, ``restart()``, ``stop()``.
- ``handlers_source()`` writes a handlers file whose every handler appends one line per run to a
  ``HandlerLog`` (one ``O_APPEND`` write per line: a SIGKILL never leaves half a line), so lost and
  duplicated handlings are counted exactly by ``tally()``.
- ``ApiServerFaults``: kill -9 and restart kube-apiserver of a ``LocalControlPlane`` (same flags,
  certificates and etcd data) from async code; a restarted apiserver's watch cache starts at the
  current revision, so every resumed watch gets 410 Gone.
- ``disconnected()``: cut an operator whose kubeconfig points at a ``FaultProxy`` off the API.
- ``Kube`` and ``LoadGenerator``: the scenario's own client, and objects created, patched and deleted
  at a bounded rate, retried through outages, with counters.
- ``secrets_of()`` and ``find_secrets()``: no token or key may appear in any log.

    async with await Kube.connect(cp.kubeconfig) as kube:
        await kube.ensure_crd(crd_body())
        log = HandlerLog(tmp / "handled.log")
        handlers = tmp / "handlers.py"
        handlers.write_text(handlers_source(log.path, delete=True))
        op = OperatorProcess(handlers, namespaces=[ns], kubeconfig=cp.kubeconfig, log=tmp / "op.log").start()
        try:
            await op.wait_ready()
            load = LoadGenerator(kube, ns, rate=100)
            await load.create([f"obj-{i}" for i in range(300)])
            await ApiServerFaults(cp).restart()
            ...
            print(tally(load.uids.values(), log.counts("create")))
        finally:
            op.stop()
"""

from opd.testing.chaos.faults import ApiServerFaults, disconnected
from opd.testing.chaos.handlerlog import Entry, HandlerLog, Tally, record, tally
from opd.testing.chaos.handlers import FAIL_ANNOTATION, HANDLED_LABEL, SLEEP_ANNOTATION, handlers_source
from opd.testing.chaos.load import KOPFEXAMPLES, Deletion, Kind, Kube, LoadGenerator, crd_body, wait_until
from opd.testing.chaos.processes import OperatorProcess
from opd.testing.chaos.secrets import find_secrets, secrets_of

__all__ = [
    "FAIL_ANNOTATION",
    "HANDLED_LABEL",
    "KOPFEXAMPLES",
    "SLEEP_ANNOTATION",
    "ApiServerFaults",
    "Deletion",
    "Entry",
    "HandlerLog",
    "Kind",
    "Kube",
    "LoadGenerator",
    "OperatorProcess",
    "Tally",
    "crd_body",
    "disconnected",
    "find_secrets",
    "handlers_source",
    "record",
    "secrets_of",
    "tally",
    "wait_until",
]

