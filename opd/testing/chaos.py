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

from __future__ import annotations

import asyncio
import base64
import collections
import concurrent.futures
import contextlib
import ctypes
import importlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from opd.kube.api import TRANSIENT_ERRORS, APIError, ConflictError, KubeClient, NotFoundError
from opd.kube.credentials import Login, load_configuration
from opd.settings import NetworkingSettings
from opd.testing.controlplane import LocalControlPlane
from opd.testing.proxy import FaultProxy

__all__ = [
    "FAIL_ANNOTATION",
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

_T = TypeVar("_T")

# Annotations that steer the generated handlers per object (a domain of their own: opd ignores
# its own *.opd.dev annotations when diffing, and these must count as the user's).
SLEEP_ANNOTATION = "chaos.opd-test/sleep"
FAIL_ANNOTATION = "chaos.opd-test/fail"


# -- the handler log ---------------------------------------------------------------------------------------------------

_fds: dict[str, int] = {}
_fds_lock = threading.Lock()


def record(log: str | os.PathLike[str], kind: str, uid: str, name: str = "") -> None:
    """Append one line ``time pid kind uid name`` to the handler log.

    One write(2) on an O_APPEND descriptor: lines of concurrent threads and processes never
    interleave, and a line written before a SIGKILL is in the file (the kernel has it; no fsync
    is needed unless the machine itself crashes).
    """
    path = os.fspath(log)
    with _fds_lock:
        fd = _fds.get(path)
        if fd is None:
            fd = _fds[path] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, f"{time.time():.6f}\t{os.getpid()}\t{kind}\t{uid}\t{name}\n".encode())


@dataclass(frozen=True)
class Entry:
    at: float  # wall-clock time.time() of the write
    pid: int
    kind: str
    uid: str
    name: str


class HandlerLog:
    """The lines ``record()`` wrote: who ran what, for which object, when."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def entries(self, kind: str | None = None) -> list[Entry]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        found = []
        for line in text.splitlines():
            parts = line.split("\t")
            if len(parts) != 5 or (kind is not None and parts[2] != kind):
                continue
            found.append(Entry(float(parts[0]), int(parts[1]), parts[2], parts[3], parts[4]))
        return found

    def counts(self, kind: str) -> collections.Counter[str]:
        """Runs per uid."""
        return collections.Counter(e.uid for e in self.entries(kind))

    def uids(self, kind: str) -> set[str]:
        return {e.uid for e in self.entries(kind)}

    def first(self, kind: str) -> dict[str, Entry]:
        """The first run of ``kind`` per uid."""
        seen: dict[str, Entry] = {}
        for entry in self.entries(kind):
            seen.setdefault(entry.uid, entry)
        return seen


@dataclass(frozen=True)
class Tally:
    """How the handlings of a kind compare with what was expected."""

    expected: int
    handled: int  # expected objects handled at least once
    lost: frozenset[str]  # expected uids never handled
    duplicated: int  # extra runs on expected objects (a handler that ran 3 times counts 2)
    unexpected: int = 0  # uids handled that were not expected at all

    def __str__(self) -> str:
        return f"{len(self.lost)} lost / {self.duplicated} duplicated of {self.expected}"


def tally(expected: Iterable[str], counts: Mapping[str, int]) -> Tally:
    wanted = set(expected)
    handled = {uid for uid in wanted if counts.get(uid, 0) > 0}
    duplicated = sum(max(0, counts.get(uid, 0) - 1) for uid in wanted)
    return Tally(expected=len(wanted), handled=len(handled), lost=frozenset(wanted - handled),
                 duplicated=duplicated, unexpected=len(set(counts) - wanted))


# -- generated handlers ----------------------------------------------------------------------------------------------

def handlers_source(log: Path, *, resource: str = "kopfexamples", create: bool = True, update: bool = False,
                    delete: bool = False, delete_result: bool = False, delay: float = 0.0,
                    delete_delay: float | None = None, is_async: bool = False) -> str:
    """A handlers file for ``opd run`` whose handlers record every run in ``log``.

    ``create_fn`` records ``create-start`` and then ``create`` (or ``create-error``), and returns
    ``{"by": pid}`` (stored as ``.status.create_fn``); ``update_fn`` records ``update``; ``delete_fn``
    (which makes opd hold a finalizer) records ``delete-start`` and then ``delete``, and with
    ``delete_result`` returns ``{"by": pid}`` too (stored as ``.status.delete_fn``). Each sleeps
    ``delay`` seconds (``delete_fn``: ``delete_delay``, if given), or what the object's
    ``chaos.opd-test/sleep`` annotation says; ``chaos.opd-test/fail: "true"`` makes ``create_fn`` raise.
    """
    d = "async def" if is_async else "def"
    pause = "await asyncio.sleep(s)" if is_async else "time.sleep(s)"
    parts = [f'''\
"""Generated by opd.testing.chaos: every handler run is recorded in the handler log."""
import asyncio
import os
import time

import opd
from opd.testing.chaos import record

LOG = {str(log)!r}
RESOURCE = {resource!r}
DELAY = {float(delay)!r}
DELETE_RESULT = {bool(delete_result)!r}
DELETE_DELAY = {float(delay if delete_delay is None else delete_delay)!r}


def _pause_seconds(annotations, default=DELAY):
    return float(annotations.get({SLEEP_ANNOTATION!r}, default))
''']
    if create:
        parts.append(f'''

@opd.on.create(RESOURCE)
{d} create_fn(uid, name, annotations, **_):
    record(LOG, "create-start", uid, name)
    s = _pause_seconds(annotations)
    if s > 0:
        {pause}
    if annotations.get({FAIL_ANNOTATION!r}) == "true":
        record(LOG, "create-error", uid, name)
        raise RuntimeError("chaos: this handler fails on purpose")
    record(LOG, "create", uid, name)
    return {{"by": os.getpid()}}
''')
    if update:
        parts.append(f'''

@opd.on.update(RESOURCE)
{d} update_fn(uid, name, annotations, **_):
    s = _pause_seconds(annotations)
    if s > 0:
        {pause}
    record(LOG, "update", uid, name)
''')
    if delete:
        parts.append(f'''

@opd.on.delete(RESOURCE)
{d} delete_fn(uid, name, annotations, **_):
    record(LOG, "delete-start", uid, name)
    s = _pause_seconds(annotations, DELETE_DELAY)
    if s > 0:
        {pause}
    record(LOG, "delete", uid, name)
    return {{"by": os.getpid()}} if DELETE_RESULT else None
''')
    return "".join(parts)


# -- processes ---------------------------------------------------------------------------------------------------------

class _Lifeline:
    """A daemon thread that starts child processes for the whole life of this process.

    Children get PR_SET_PDEATHSIG, so they die with a SIGKILLed runner; but that signal fires when
    the *thread* that forked them exits, and asyncio's executor threads exit with their loop (a
    pytest test's loop ends with the test). This thread never ends before the process does.
    """

    _instances: dict[str, _Lifeline] = {}
    _lock = threading.Lock()

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]]] = queue.SimpleQueue()
        threading.Thread(target=self._run, name=f"opd-chaos-{name}", daemon=True).start()

    @classmethod
    def named(cls, name: str) -> _Lifeline:
        with cls._lock:
            if name not in cls._instances:
                cls._instances[name] = cls(name)
            return cls._instances[name]

    def _run(self) -> None:
        while True:
            fn, future = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

    def submit(self, fn: Callable[[], _T]) -> concurrent.futures.Future[_T]:
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()
        self._jobs.put((fn, future))
        return future


try:  # loaded here, in the parent: a forked child of a threaded process should do as little as possible
    _prctl: Callable[..., int] | None = ctypes.CDLL("libc.so.6", use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # A SIGKILLed runner must not leave operators behind.
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _clean_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    # The operator must not inherit the runner's systemd or opd settings.
    drop = ("NOTIFY_SOCKET", "JOURNAL_STREAM", "WATCHDOG_USEC", "WATCHDOG_PID")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPD_") and k not in drop}
    env["PYTHONUNBUFFERED"] = "1"
    return {**env, **(extra or {})}


class OperatorProcess:
    """An operator run as a child process; every signal goes to its PID, never by name.

    By default ``python -m opd run HANDLERS -n NS... --kubeconfig KC --log-format text [-v]``; give
    ``argv`` to run anything else (``opd start --config ...``, your own script). Output of every
    start is appended to ``log``, each start after a marker line.
    """

    def __init__(self, handlers: Path | None = None, *, namespaces: Sequence[str] = (), kubeconfig: Path | None = None,
                 log: Path, verbose: bool = False, argv: Sequence[str] | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        if argv is None:
            if handlers is None:
                raise ValueError("give a handlers file or a whole argv")
            argv = [sys.executable, "-m", "opd", "run", str(handlers), "--log-format", "text"]
            for namespace in namespaces:
                argv += ["-n", namespace]
            if kubeconfig is not None:
                argv += ["--kubeconfig", str(kubeconfig)]
            if verbose:
                argv.append("-v")
        self.argv = list(argv)
        self.log = Path(log)
        self.env = _clean_env(env)
        self.starts = 0
        self.pids: list[int] = []  # of every start, in order
        self._popen: subprocess.Popen[bytes] | None = None
        self._offset = 0  # where the current start's output begins in the log

    # -- lifecycle ---------------------------------------------------------------------------------------------------
    def start(self) -> OperatorProcess:
        if self.running:
            raise RuntimeError(f"the operator already runs as pid {self.pid}")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            out.write(f"==== opd-chaos: start #{self.starts + 1} at {time.strftime('%H:%M:%S')}\n".encode())
            out.flush()
            self._offset = out.tell()

            def spawn() -> subprocess.Popen[bytes]:
                return subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                        env=self.env, start_new_session=True, preexec_fn=_die_with_parent)

            self._popen = _Lifeline.named("operators").submit(spawn).result(30)
        self.starts += 1
        self.pids.append(self._popen.pid)
        return self

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._popen.poll() if self._popen is not None else None

    def signal(self, sig: int) -> None:
        if self._popen is not None and self._popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._popen.send_signal(sig)

    def sigkill(self) -> None:
        """kill -9, and reap it (a crash: no handler, no cleanup runs)."""
        self.signal(signal.SIGKILL)
        if self._popen is not None:
            self._popen.wait(30)

    def sigterm(self) -> None:
        """Ask for a graceful stop; ``wait_exit()`` measures how long it takes."""
        self.signal(signal.SIGTERM)

    def restart(self) -> OperatorProcess:
        """kill -9 (if still running) and start again at once, with the same arguments."""
        self.sigkill()
        return self.start()

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; idempotent. Returns the exit code."""
        if self._popen is None:
            return None
        if self._popen.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.sigkill()
        return self._popen.poll()

    async def wait_exit(self, timeout: float) -> float | None:
        """Seconds until the process exits, or None if it still runs after ``timeout``."""
        started = time.monotonic()
        while self._popen is not None and self._popen.poll() is None:
            if time.monotonic() - started > timeout:
                return None
            await asyncio.sleep(0.05)
        return time.monotonic() - started

    # -- output ------------------------------------------------------------------------------------------------------
    def output(self, *, all_starts: bool = False) -> str:
        try:
            with self.log.open("rb") as f:
                if not all_starts:
                    f.seek(self._offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    async def wait_for_output(self, pattern: str, timeout: float) -> float | None:
        """Seconds until ``pattern`` (a regex) shows in this start's output; None after ``timeout``."""
        started = time.monotonic()
        regex = re.compile(pattern)
        while not regex.search(self.output()):
            if time.monotonic() - started > timeout or not self.running:
                return None
            await asyncio.sleep(0.1)
        return time.monotonic() - started

    async def wait_ready(self, timeout: float = 60.0) -> float:
        """Until opd says every watch has listed its objects; raise with the output's tail if not."""
        took = await self.wait_for_output(r"opd: ready\b", timeout)
        if took is None:
            tail = "\n".join(self.output().splitlines()[-15:])
            state = "running" if self.running else f"exited with {self.returncode}"
            raise TimeoutError(f"operator not ready within {timeout:g}s ({state}); its output ends:\n{tail}")
        return took


# -- the API server ---------------------------------------------------------------------------------------------------

class ApiServerFaults:
    """kill -9 and restart kube-apiserver of a LocalControlPlane, awaitable.

    The work runs on a lifeline thread (see ``_Lifeline``), so the restarted apiserver is not
    killed when the awaiting test's loop ends. The restarted apiserver keeps flags, certificates
    and etcd data; its watch cache starts at the current revision, so a resumed watch from an
    older resourceVersion gets 410 Gone.
    """

    def __init__(self, control_plane: LocalControlPlane) -> None:
        self.control_plane = control_plane
        self.restarts = 0
        self.downtime: list[float] = []  # seconds each restart kept the API away

    async def _on_lifeline(self, fn: Callable[[], _T]) -> _T:
        return await asyncio.wrap_future(_Lifeline.named("apiserver").submit(fn))

    async def kill(self) -> None:
        await self._on_lifeline(lambda: self.control_plane.kill_apiserver(signal.SIGKILL))

    async def start(self) -> None:
        await self._on_lifeline(self.control_plane.start_apiserver)

    async def restart(self, downtime: float = 0.0) -> float:
        """kill -9, stay down ``downtime`` seconds, start, wait until ready; returns the seconds it was away."""
        began = time.monotonic()
        await self.kill()
        if downtime > 0:
            await asyncio.sleep(downtime)
        await self.start()
        took = time.monotonic() - began
        self.restarts += 1
        self.downtime.append(took)
        return took


@contextlib.asynccontextmanager
async def disconnected(proxy: FaultProxy, *, silent: bool = False) -> AsyncIterator[None]:
    """Cut whoever talks through ``proxy`` off the API for the duration of the block.

    New connections are refused; open ones are reset (or, with ``silent``, blackholed: no
    RST, no data, as when a NAT entry is dropped). On exit, new connections work again.
    """
    proxy.refuse_new(True)
    try:
        if silent:
            proxy.blackhole_all()
        else:
            proxy.reset_all()
        yield
    finally:
        proxy.refuse_new(False)
        if silent:
            proxy.reset_all()  # blackholed pairs would otherwise stay open forever


# -- the scenario's own client and its load ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Kind:
    """A namespaced custom resource, as far as the load generator needs it."""

    group: str = "kopf.dev"
    version: str = "v1"
    plural: str = "kopfexamples"
    kind: str = "KopfExample"

    def path(self, namespace: str, name: str = "", subresource: str = "") -> str:
        base = f"/apis/{self.group}/{self.version}/namespaces/{namespace}/{self.plural}"
        return "/".join(p for p in (base, name, subresource) if p)

    def body(self, name: str, spec: Any = None, *, labels: Mapping[str, str] | None = None,
             annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name}
        if labels:
            meta["labels"] = dict(labels)
        if annotations:
            meta["annotations"] = dict(annotations)
        body: dict[str, Any] = {"apiVersion": f"{self.group}/{self.version}", "kind": self.kind, "metadata": meta}
        if spec is not None:
            body["spec"] = spec
        return body


KOPFEXAMPLES = Kind()


def crd_body(kind: Kind = KOPFEXAMPLES) -> dict[str, Any]:
    """A CRD for ``kind`` with a status subresource and no schema to speak of (any spec goes)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{kind.plural}.{kind.group}"},
        "spec": {
            "group": kind.group,
            "scope": "Namespaced",
            "names": {"plural": kind.plural, "singular": kind.kind.lower(), "kind": kind.kind},
            "versions": [{
                "name": kind.version, "served": True, "storage": True,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
            }],
        },
    }


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT_ERRORS) or (isinstance(exc, APIError) and exc.transient)


class Kube:
    """The scenario's own API client (its own connections, never the operator's), retrying through outages."""

    def __init__(self, client: KubeClient, *, patience: float = 180.0) -> None:
        self.client = client
        self.patience = patience  # how long one call keeps retrying while the API is away
        self.counters: collections.Counter[str] = collections.Counter()

    @classmethod
    async def connect(cls, kubeconfig: Path, *, patience: float = 180.0) -> Kube:
        configuration, source = await load_configuration(Login(kubeconfig=str(kubeconfig)))
        settings = NetworkingSettings(request_timeout=30.0, read_timeout=30.0, connect_timeout=5.0)
        return cls(KubeClient(configuration, settings, source=source), patience=patience)

    async def __aenter__(self) -> Kube:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.client.close()

    async def call(self, method: str, path: str, body: Any = None, *, query: Mapping[str, Any] | None = None,
                   content_type: str = "application/json", on_retry: Callable[[], None] | None = None) -> Any:
        """One request, retried while the failure is the connection's or the server's (5xx, 429).

        A retried write may have landed the first time (only its answer was lost): ``on_retry``
        tells the caller, who knows what a 409 or 404 then means.
        """
        deadline = time.monotonic() + self.patience
        delay = 0.1
        while True:
            self.counters["requests"] += 1
            try:
                return await self.client.request(method, path, query=query, body=body, content_type=content_type)
            except Exception as exc:
                if not _transient(exc) or time.monotonic() > deadline:
                    raise
                self.counters["retries"] += 1
                if on_retry is not None:
                    on_retry()
                await asyncio.sleep(getattr(exc, "retry_after", None) or delay)
                delay = min(delay * 2, 2.0)

    async def get(self, path: str) -> Any:
        return await self.call("GET", path)

    async def list(self, kind: Kind, namespace: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        query: dict[str, Any] = {"limit": 500}
        while True:
            page = await self.call("GET", kind.path(namespace), query=query)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items
            query["continue"] = token

    async def create_namespace(self, name: str) -> None:
        with contextlib.suppress(ConflictError):
            await self.call("POST", "/api/v1/namespaces", {"metadata": {"name": name}})

    async def ensure_crd(self, body: Mapping[str, Any], timeout: float = 60.0) -> None:
        path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
        with contextlib.suppress(ConflictError):
            await self.call("POST", path, body)
        name = body["metadata"]["name"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            crd = await self.get(f"{path}/{name}")
            conditions = (crd.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"CRD {name} not established within {timeout:g}s")


@dataclass(frozen=True)
class Deletion:
    uid: str | None
    # Whether the finalizer was on the object when the deletion was accepted (so a delete
    # handler must run); None when a retried DELETE cannot tell (the first one may have landed).
    had_finalizer: bool | None


class LoadGenerator:
    """Objects created, patched and deleted at a bounded rate, each call retried through outages.

    ``uids`` maps every created name to its uid; ``deletions`` every deleted name to what the
    DELETE found; ``counters`` counts operations, retries and the ambiguities of retried writes.
    """

    def __init__(self, kube: Kube, namespace: str, *, kind: Kind = KOPFEXAMPLES, rate: float = 100.0,
                 concurrency: int = 32, finalizer: str = "opd.dev/finalizer") -> None:
        self.kube = kube
        self.namespace = namespace
        self.kind = kind
        self.rate = rate
        self.concurrency = concurrency
        self.finalizer = finalizer
        self.uids: dict[str, str] = {}
        self.created_at: dict[str, float] = {}  # name -> time.time() the object was created
        self.deletions: dict[str, Deletion] = {}
        self.counters: collections.Counter[str] = collections.Counter()

    async def _paced(self, items: Sequence[_T], op: Callable[[_T], Awaitable[None]]) -> None:
        """``op`` per item, started at ``rate`` per second, at most ``concurrency`` at once."""
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(self.concurrency)
        began = loop.time()

        async def one(item: _T) -> None:
            try:
                await op(item)
            finally:
                slots.release()

        tasks: list[asyncio.Task[None]] = []
        try:
            for i, item in enumerate(items):
                await asyncio.sleep(max(0.0, began + i / self.rate - loop.time()))
                await slots.acquire()
                tasks.append(loop.create_task(one(item)))
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    async def create(self, names: Sequence[str], *, spec: Any = None,
                     body: Callable[[str], dict[str, Any]] | None = None) -> None:
        make = body or (lambda name: self.kind.body(name, spec if spec is not None else {"name": name}))

        async def create_one(name: str) -> None:
            created = await self._create(name, make(name))
            self.uids[name] = created["metadata"]["uid"]
            self.created_at[name] = time.time()
            self.counters["created"] += 1

        await self._paced(names, create_one)

    async def _create(self, name: str, body: dict[str, Any]) -> Any:
        retried = []
        try:
            return await self.kube.call("POST", self.kind.path(self.namespace), body,
                                        on_retry=lambda: retried.append(True))
        except ConflictError:
            if not retried:
                raise  # not ours: a name used twice
            # A retried POST whose first try landed: the object is ours.
            self.counters["create-landed-twice"] += 1
            return await self.kube.get(self.kind.path(self.namespace, name))

    async def patch(self, names: Sequence[str], patch: Callable[[str], dict[str, Any]]) -> None:
        async def patch_one(name: str) -> None:
            await self.kube.call("PATCH", self.kind.path(self.namespace, name), patch(name),
                                 content_type="application/merge-patch+json")
            self.counters["patched"] += 1

        await self._paced(names, patch_one)

    async def delete(self, names: Sequence[str]) -> None:
        async def delete_one(name: str) -> None:
            retried = []
            try:
                response = await self.kube.call("DELETE", self.kind.path(self.namespace, name),
                                                on_retry=lambda: retried.append(True))
            except NotFoundError:
                # Only a retried DELETE may find it gone; which try took the finalizer's view, we cannot tell.
                if not retried:
                    raise
                self.counters["delete-ambiguous"] += 1
                self.deletions[name] = Deletion(self.uids.get(name), None)
                return
            meta = (response or {}).get("metadata") or {}
            had = self.finalizer in (meta.get("finalizers") or ())
            self.deletions[name] = Deletion(meta.get("uid") or self.uids.get(name), had)
            self.counters["deleted"] += 1

        await self._paced(names, delete_one)


async def wait_until(check: Callable[[], Any], *, timeout: float, interval: float = 0.2) -> float | None:
    """Seconds until ``check()`` (sync or async) is truthy; None if it is not within ``timeout``."""
    started = time.monotonic()
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            return None
        await asyncio.sleep(interval)


# -- secrets ---------------------------------------------------------------------------------------------------------

_PEM_LINE = re.compile(r"^[A-Za-z0-9+/=]{24,}$")


def _pem_needles(pem: str) -> list[str]:
    # Every base64 line of a key: a leak of part of it counts.
    return [line.strip() for line in pem.splitlines() if _PEM_LINE.match(line.strip())]


def secrets_of(kubeconfig: Path | None = None, *, key_files: Iterable[Path] = (),
               extra: Iterable[str] = ()) -> list[str]:
    """Strings that must never show in a log: the kubeconfig's tokens, passwords and client keys,
    and the base64 lines of ``key_files`` (e.g. a local control plane's ``pki/*.key``)."""
    yaml = importlib.import_module("yaml")  # kubernetes_asyncio's dependency; typed stubs are not

    needles = [s for s in extra if s]
    if kubeconfig is not None:
        config = yaml.safe_load(Path(kubeconfig).read_text()) or {}
        for user in config.get("users") or []:
            data = (user or {}).get("user") or {}
            for key in ("token", "password"):
                if data.get(key):
                    needles.append(str(data[key]))
            if data.get("client-key-data"):
                needles.append(str(data["client-key-data"]))
                pem = base64.b64decode(data["client-key-data"]).decode(errors="replace")
                needles += _pem_needles(pem)
            if data.get("client-key"):
                key_files = [*key_files, Path(data["client-key"])]
            if data.get("tokenFile"):
                with contextlib.suppress(OSError):
                    needles.append(Path(data["tokenFile"]).read_text().strip())
    for path in key_files:
        with contextlib.suppress(OSError):
            needles += _pem_needles(Path(path).read_text())
    return sorted(set(needles))


def find_secrets(paths: Iterable[Path], secrets: Iterable[str]) -> list[tuple[Path, int]]:
    """Every (file, line number) where one of ``secrets`` appears."""
    needles = [s.encode() for s in secrets if s]
    found = []
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError:
            continue
        for number, line in enumerate(data.splitlines(), 1):
            if any(needle in line for needle in needles):
                found.append((Path(path), number))
    return found
