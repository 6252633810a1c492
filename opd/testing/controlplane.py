"""A real, local Kubernetes control plane for tests: opd's own "envtest".

etcd and kube-apiserver (and, when built, a kube-controller-manager running
only the garbage-collector and namespace controllers) run as child processes
on free loopback ports, with TLS from a throw-away CA, a static bearer token
and RBAC on. Every process is stopped by its PID.
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
from opd.testing.assets import Assets, find_assets

ADMIN_TOKEN = "opd-local-admin-token"  # loopback-only, throw-away cluster
SERVICE_CIDR = "10.0.0.0/24"
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


def _openssl(*args: str, cwd: Path) -> None:
    try:
        subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise ControlPlaneError("openssl is not installed: apt-get install openssl") from exc
    except subprocess.CalledProcessError as exc:
        last = (exc.stderr or "").strip().splitlines()[-1:] or ["?"]
        raise ControlPlaneError(f"openssl {args[0]} failed: {last[0]}") from exc


def make_certificates(pki: Path) -> None:
    """A CA, a serving certificate for 127.0.0.1/localhost, a service-account key."""
    pki.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
             "-subj", "/CN=opd-local-ca", cwd=pki)
    _openssl("req", *ec, "-keyout", "apiserver.key", "-out", "apiserver.csr",
             "-subj", "/CN=kube-apiserver", cwd=pki)
    (pki / "san.cnf").write_text(
        "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _openssl("x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "apiserver.crt", "-days", "3650", "-extfile", "san.cnf",
             cwd=pki)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)


@dataclass
class _Proc:
    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def start(self, *, die_with_parent: bool) -> None:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.argv,
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
    etcd_port: int = 0
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
        return ADMIN_TOKEN

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
        self.workdir.mkdir(parents=True, exist_ok=True)
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
        (d / "tokens.csv").write_text(f'{ADMIN_TOKEN},opd-admin,opd-admin,"system:masters"\n')
        self.etcd_port = self.etcd_port or free_port()
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
            "users": [{"name": "opd-admin", "user": {"token": ADMIN_TOKEN}}],
            "contexts": [{"name": "opd-local", "context": {"cluster": "opd-local", "user": "opd-admin"}}],
            "current-context": "opd-local",
        }
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)
        return path

    def _spawn(self, name: str, argv: list[str]) -> _Proc:
        proc = self._procs.get(name) or _Proc(name, argv, self._dir / f"{name}.log")
        proc.argv = argv
        self._procs[name] = proc
        try:
            proc.start(die_with_parent=self.die_with_parent)
        except OSError as exc:
            raise ControlPlaneError(f"cannot start {name} ({argv[0]}): {exc.strerror}") from exc
        return proc

    def _start_etcd(self) -> None:
        assert self.assets is not None
        url = f"http://127.0.0.1:{self.etcd_port}"
        peer = f"http://127.0.0.1:{free_port()}"
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
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
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
            urllib.request.Request(f"{self.server}{path}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
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

