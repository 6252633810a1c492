"""A real, local Kubernetes control plane for tests: opd's own "envtest".

etcd and kube-apiserver (and, when built, a kube-controller-manager running
only the garbage-collector and namespace controllers) run as child processes
on loopback, with TLS from a throw-away CA, a random admin token and RBAC on.
etcd listens on unix sockets only, in the cluster's folder (0700): nothing else on
the machine reaches its data. Every process is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from opd.errors import ControlPlaneError
from opd.localcluster.assets import Assets, find_assets
from opd.localcluster.credentials import (
    ADMIN_USER,
    make_certificates,
    new_admin_token,
    private_dir,
    write_private,
    write_token_file,
)

SERVICE_CIDR = "10.0.0.0/24"
# etcd 3.4 wants host:port even in a unix:// URL, and takes the host as a socket path relative
# to its working directory; every process runs in the cluster's folder, so the name is short
# (a socket path has a limit of 107 bytes) and the folder's mode guards the sockets.
ETCD_SOCKET = "etcd.sock:0"
ETCD_PEER_SOCKET = "etcd-peer.sock:0"
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    # Children of a SIGKILLed test run must not outlive it.
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class _Proc:
    name: str
    argv: list[str]
    log: Path
    cwd: Path
    popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def start(self, *, die_with_parent: bool) -> None:
        with os.fdopen(os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as out:
            self.popen = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl-C reaches us, and we stop them in order
                preexec_fn=_die_with_parent if die_with_parent else None,
            )

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.popen.kill()
                self.popen.wait()
        self.popen = None

    def tail(self, lines: int = 5) -> str:
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])


@dataclass
class LocalControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager) on loopback.

    Use as a context manager, or call start() and stop(). ``kubeconfig`` is a
    file any client (opd, kubectl, kubernetes_asyncio) can load.
    """

    assets: Assets | None = None
    workdir: Path | None = None
    controller_manager: bool = True
    die_with_parent: bool = True
    startup_timeout: float = 90.0
    keep_workdir: bool = False
    apiserver_port: int = 0
    _token: str | None = field(default=None, repr=False)
    _procs: dict[str, _Proc] = field(default_factory=dict, repr=False)
    _own_workdir: bool = field(default=False, repr=False)

    # -- paths ---------------------------------------------------------------
    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def kubeconfig(self) -> Path:
        return self._dir / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self._dir / "pki" / "ca.crt"

    @property
    def token(self) -> str:
        """The admin's bearer token (``system:masters``), made at random for this cluster."""
        if self._token is None:
            raise ControlPlaneError("the control plane has not been started")
        return self._token

    @property
    def etcd_socket(self) -> Path:
        return self._dir / ETCD_SOCKET

    @property
    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self._procs.items() if p.pid is not None and p.running()}

    @property
    def _dir(self) -> Path:
        if self.workdir is None:
            raise ControlPlaneError("the control plane has not been started")
        return self.workdir

    # -- lifecycle -----------------------------------------------------------
    def __enter__(self) -> LocalControlPlane:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        assets = self.assets or find_assets()
        self.assets = assets
        if self.workdir is None:
            # etcd fsyncs every write: tmpfs keeps that cheap, the data survives an apiserver restart.
            shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
            self.workdir = Path(tempfile.mkdtemp(prefix="opd-cp-", dir=shm))
            self._own_workdir = True
        private_dir(self.workdir)
        try:
            self._prepare()
            self._start_etcd()
            self.start_apiserver()
            if self.controller_manager and assets.kube_controller_manager is not None:
                self._start_controller_manager()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every process by PID, newest first; idempotent."""
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            proc = self._procs.get(name)
            if proc is not None:
                proc.stop()
        if self._own_workdir and not self.keep_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
            self._own_workdir = False

    def _prepare(self) -> None:
        d = self._dir
        make_certificates(d / "pki")
        self._token = new_admin_token()
        write_token_file(d / "tokens.csv", self._token)
        self.apiserver_port = self.apiserver_port or free_port()
        self.write_kubeconfig(self.kubeconfig)

    def write_kubeconfig(self, path: Path, *, server: str | None = None) -> Path:
        """A kubeconfig (JSON is valid YAML) for the admin user; ``server`` may point at a proxy."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "opd-local", "cluster": {
                "server": server or self.server,
                "certificate-authority": str(self.ca_file),
            }}],
            "users": [{"name": ADMIN_USER, "user": {"token": self.token}}],
            "contexts": [{"name": "opd-local", "context": {"cluster": "opd-local", "user": ADMIN_USER}}],
            "current-context": "opd-local",
        }
        return write_private(path, json.dumps(config, indent=2))

    def _spawn(self, name: str, argv: list[str]) -> _Proc:
        proc = self._procs.get(name) or _Proc(name, argv, self._dir / f"{name}.log", self._dir)
        proc.argv = argv
        self._procs[name] = proc
        try:
            proc.start(die_with_parent=self.die_with_parent)
        except OSError as exc:
            raise ControlPlaneError(f"cannot start {name} ({argv[0]}): {exc.strerror}") from exc
        return proc

    def _start_etcd(self) -> None:
        assert self.assets is not None
        url = f"unix://{ETCD_SOCKET}"
        peer = f"unix://{ETCD_PEER_SOCKET}"
        self._spawn("etcd", [
            str(self.assets.etcd),
            "--name=opd", f"--data-dir={self._dir / 'etcd'}",
            f"--listen-client-urls={url}", f"--advertise-client-urls={url}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=opd={peer}",
            "--quota-backend-bytes=8589934592", "--log-level=warn",
        ])

    def start_apiserver(self) -> None:
        """Start kube-apiserver (again, after a kill) with the same flags and data; wait for /readyz."""
        assert self.assets is not None
        pki = self._dir / "pki"
        proc = self._spawn("kube-apiserver", [
            str(self.assets.kube_apiserver),
            f"--etcd-servers=unix://{ETCD_SOCKET}",
            "--bind-address=127.0.0.1", f"--secure-port={self.apiserver_port}",
            "--insecure-port=0", f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--token-auth-file={self._dir / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            f"--service-account-key-file={pki / 'sa.key'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--disable-admission-plugins=ServiceAccount",
            "--advertise-address=127.0.0.1",
            "--allow-privileged=true",
            "--v=0",
        ])
        self._wait_ready(proc)

    def kill_apiserver(self, sig: int = signal.SIGKILL) -> None:
        proc = self._procs.get("kube-apiserver")
        if proc is not None:
            proc.stop(sig)

    def restart_apiserver(self, sig: int = signal.SIGKILL) -> None:
        self.kill_apiserver(sig)
        self.start_apiserver()

    def _start_controller_manager(self) -> None:
        assert self.assets is not None and self.assets.kube_controller_manager is not None
        self._spawn("kube-controller-manager", [
            str(self.assets.kube_controller_manager),
            f"--kubeconfig={self.kubeconfig}",
            "--controllers=garbagecollector,namespace",
            "--leader-elect=false",
            "--port=0", "--secure-port=0",
            "--concurrent-gc-syncs=5", "--concurrent-namespace-syncs=5",
            "--namespace-sync-period=10s",
            "--v=0",
        ])

    def _wait_ready(self, proc: _Proc) -> None:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        # /readyz can answer before the apiserver's bootstrap controller has made the
        # `default` namespace; a test that writes there right away would get a 404.
        pending = [
            urllib.request.Request(f"{self.server}{path}", headers={"Authorization": f"Bearer {self.token}"})
            for path in ("/readyz", "/api/v1/namespaces/default")
        ]
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if not proc.running():
                etcd = self._procs.get("etcd")
                why = proc.tail() or (etcd.tail() if etcd else "")
                raise ControlPlaneError(f"kube-apiserver exited while starting: {why}")
            try:
                with urllib.request.urlopen(pending[0], context=ctx, timeout=2) as response:
                    if response.status == 200:
                        pending.pop(0)
                        if not pending:
                            return
                        continue
            except (urllib.error.URLError, OSError, ssl.SSLError):
                pass
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"kube-apiserver not ready after {self.startup_timeout:.0f}s: {proc.tail()}"
                )
            time.sleep(0.2)

