"""``KopfRunner``: an operator run as ``opd run ARGS`` would, in a thread, for a test (Kopf's name,
for Kopf users' tests: ``from opd.testing import KopfRunner``)::

    with KopfRunner(["run", "-A", "--verbose", "example.py"]) as runner:
        ...  # create objects, wait
    assert runner.exit_code == 0 and runner.exception is None
    assert "created" in runner.stdout

It takes ``opd run``'s arguments (files, ``-m``, ``-n``/``-A``, ``-v``/``-d``/``-q``,
``--standalone``, ``-L``/``--liveness``, ``--log-format``, ``--log-prefix``, ``--log-refkey``,
``--kubeconfig``, ``--context``; Kopf's peering flags are refused as ``opd run`` refuses them),
starts the operator in a thread with a loop of its own, waits until it is ready (Kopf's does not
wait), and stops it on leaving the block. What the operator logged is in ``output`` (and
``stdout``, ``stdout_bytes``; ``stderr`` stays empty); an error is in ``exception`` and
``exc_info`` (re-raised on leaving, unless ``reraise=False``), with ``exit_code`` 1.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
from types import TracebackType
from typing import Any

from loguru import logger

from opd.devrun import load
from opd.errors import ConfigError
from opd.kube.credentials import Login
from opd.orchestration import operator
from opd.registry import OperatorRegistry
from opd.settings import OperatorSettings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="opd", add_help=False, exit_on_error=False)
    parser.add_argument("command", choices=["run"])
    parser.add_argument("files", nargs="*")
    parser.add_argument("-m", "--module", dest="modules", action="append", default=[])
    parser.add_argument("-n", "--namespace", dest="namespaces", action="append", default=[])
    parser.add_argument("-A", "--all-namespaces", dest="clusterwide", action="store_true")
    parser.add_argument("--standalone", action="store_true")
    parser.add_argument("--verbose", "-v", action="store_true")
    parser.add_argument("--debug", "-d", action="store_true")
    parser.add_argument("--quiet", "-q", action="store_true")
    parser.add_argument("--liveness", "-L")
    parser.add_argument("--log-format", choices=["plain", "full", "json", "text", "journal", "auto"])
    parser.add_argument("--log-prefix", "--no-log-prefix", dest="log_prefix", action="store_const", const=True)
    parser.add_argument("--log-refkey")
    parser.add_argument("--peering", "-P")
    parser.add_argument("--priority", "-p", type=int)
    parser.add_argument("--dev", action="store_true")
    parser.add_argument("--kubeconfig")
    parser.add_argument("--context")
    return parser


class KopfRunner:
    def __init__(self, args: list[str], *, reraise: bool = True, timeout: float | None = 30.0,
                 registry: OperatorRegistry | None = None, settings: OperatorSettings | None = None) -> None:
        try:
            self.args = _parser().parse_intermixed_args(args)
        except (argparse.ArgumentError, SystemExit) as exc:
            raise ConfigError(f"KopfRunner: cannot read the arguments {args!r} as opd run's") from exc
        self.reraise = reraise
        self.timeout = timeout
        self.registry = registry
        self.settings = settings
        self.exception: BaseException | None = None
        self.exit_code: int | None = None
        self._lines: list[str] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._sink: int | None = None
        self._exc_info: tuple[type[BaseException], BaseException, TracebackType | None] | None = None

    @property
    def output(self) -> str:
        return "".join(self._lines)

    stdout = output

    @property
    def stdout_bytes(self) -> bytes:
        return self.output.encode()

    @property
    def stderr(self) -> str:
        return ""  # what the operator says goes to ``output``

    @property
    def stderr_bytes(self) -> bytes:
        return b""

    @property
    def exc_info(self) -> tuple[type[BaseException], BaseException, TracebackType | None] | None:
        return self._exc_info

    def __enter__(self) -> KopfRunner:
        level = "DEBUG" if self.args.verbose or self.args.debug else "WARNING" if self.args.quiet else "INFO"
        self._sink = logger.add(self._lines.append, level=level, format="{time:HH:mm:ss.SSS} {level} {message}")
        self._thread = threading.Thread(target=self._main, name="opd-kopfrunner", daemon=True)
        self._thread.start()
        while not self._ready.wait(0.05):  # ready, or failed before that
            if not self._thread.is_alive():
                break
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout)
            if self._thread.is_alive():
                self.exception = self.exception or TimeoutError(f"the operator did not stop within {self.timeout}s")
                self.exit_code = 1
        if self._sink is not None:
            logger.remove(self._sink)
        if self.reraise and self.exception is not None and exc is None:
            raise self.exception

    def _main(self) -> None:
        args = self.args
        try:
            for flag, given in (("--peering", args.peering is not None), ("--priority", args.priority is not None),
                                ("--dev", args.dev)):
                if given:
                    raise ConfigError(f"{flag}: opd run does not peer with other operators (Kopf's KopfPeering): "
                                      "run one (--standalone), or replicas with opd run --ha (Leases)")
            registry = self.registry or load(args.files, args.modules)
            login = Login(kubeconfig=args.kubeconfig, context=args.context) if args.kubeconfig or args.context else None
            kwargs: dict[str, Any] = {
                "registry": registry, "settings": self.settings, "namespaces": args.namespaces or None,
                "clusterwide": args.clusterwide or not args.namespaces, "login": login,
                "stop_flag": self._stop, "ready_flag": self._ready, "liveness_endpoint": args.liveness,
            }
            asyncio.run(operator(**kwargs))
        except BaseException as exc:  # said to the test, which decides
            self.exception = exc
            self._exc_info = (type(exc), exc, exc.__traceback__)
            self.exit_code = 1
        else:
            self.exit_code = 0
        finally:
            self._ready.set()
