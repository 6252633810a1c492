"""Exec credential plugins (a kubeconfig user's ``exec``): run the command, read its ExecCredential.

As kubectl runs them (client.authentication.k8s.io v1, v1beta1, v1alpha1): ``command`` (a relative path
with a separator is relative to the kubeconfig file; a bare name is looked up in ``$PATH``),
``args``, ``env`` added to opd's environment, ``KUBERNETES_EXEC_INFO`` describing the request
(and the cluster, with ``provideClusterInfo``). The plugin is bounded: it runs for at most
``timeout`` seconds and may print at most ``max_output`` bytes; past either it is killed and the
credentials are refused in one line. opd runs unattended: a plugin is interactive only when opd's
own stdin is a terminal and the kubeconfig allows it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from opd.kube.kubeconfig import Entry, KubeconfigError

API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1",
                "client.authentication.k8s.io/v1alpha1")
TIMEOUT = 60.0  # seconds a plugin may take (a cloud CLI fetching a token: a few)
MAX_OUTPUT = 1024 * 1024  # bytes of stdout a plugin may print (an ExecCredential is a few KiB)
_STDERR_KEPT = 4096  # the tail of stderr kept for the error message


@dataclass(frozen=True)
class ExecCredential:
    """What a plugin answered: a token, or a client certificate and key (PEM); and until when."""

    token: str | None = field(default=None, repr=False)
    certificate: bytes | None = field(default=None, repr=False)
    key: bytes | None = field(default=None, repr=False)
    expires: datetime.datetime | None = None  # aware; None: valid until refused


@dataclass(frozen=True)
class ExecPlugin:
    """A user's ``exec`` section, checked."""

    command: str
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = field(repr=False)
    api_version: str
    interactive_mode: str  # Never, IfAvailable, Always
    provide_cluster_info: bool
    where: str  # "kubeconfig PATH: users[name=u].user.exec", for messages

    @classmethod
    def from_entry(cls, exec_: Entry) -> ExecPlugin:
        command = exec_.string("command")
        if command is None:
            raise exec_.fail("command", "missing")
        if os.sep in command and not os.path.isabs(command):
            command = str(exec_.path.parent / command)
        api_version = exec_.string("apiVersion")
        if api_version not in API_VERSIONS:
            raise exec_.fail("apiVersion", f"expected one of {', '.join(API_VERSIONS)}")
        args = exec_.body.get("args") or []
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise exec_.fail("args", "expected a list of strings")
        env: list[tuple[str, str]] = []
        raw_env = exec_.body.get("env") or []
        if not isinstance(raw_env, list):
            raise exec_.fail("env", "expected a list of {name, value}")
        for index, item in enumerate(raw_env):
            if not (isinstance(item, dict) and isinstance(item.get("name"), str) and item["name"]
                    and isinstance(item.get("value", ""), str)):
                raise exec_.fail(f"env[{index}]", "expected {name: string, value: string}")
            env.append((item["name"], item.get("value", "")))
        mode = exec_.string("interactiveMode") or "IfAvailable"  # kubectl requires it for v1; opd does not
        if mode not in ("Never", "IfAvailable", "Always"):
            raise exec_.fail("interactiveMode", "expected Never, IfAvailable or Always")
        return cls(command, tuple(args), tuple(env), api_version, mode,
                   bool(exec_.boolean("provideClusterInfo")), f"kubeconfig {exec_.path}: {exec_.where}")

    def fail(self, problem: str) -> KubeconfigError:
        return KubeconfigError(f"{self.where}: {problem}")

    def interactive(self) -> bool:
        if self.interactive_mode == "Never":
            return False
        terminal = sys.stdin is not None and sys.stdin.isatty()
        if self.interactive_mode == "Always" and not terminal:
            raise self.fail(f"{self.command!r:.80} needs a terminal (interactiveMode: Always); opd has none")
        return terminal

    def exec_info(self, interactive: bool, cluster: dict[str, Any] | None) -> str:
        spec: dict[str, Any] = {"interactive": interactive}
        if cluster is not None:
            spec["cluster"] = cluster
        return json.dumps({"apiVersion": self.api_version, "kind": "ExecCredential", "spec": spec})

    async def run(self, cluster: dict[str, Any] | None = None, *, timeout: float = TIMEOUT,
                  max_output: int = MAX_OUTPUT) -> ExecCredential:
        """Run the plugin once; its credential, or a KubeconfigError in one line."""
        interactive = self.interactive()
        env = {**os.environ, **dict(self.env),
               "KUBERNETES_EXEC_INFO": self.exec_info(interactive, cluster if self.provide_cluster_info else None)}
        try:
            proc = await asyncio.create_subprocess_exec(
                self.command, *self.args, env=env, stdin=None if interactive else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        except OSError as exc:  # not found, not executable
            raise self.fail(f"cannot run {self.command!r:.120}: {exc.strerror or type(exc).__name__}") from None
        assert proc.stdout is not None and proc.stderr is not None
        stderr = bytearray()

        async def drain_stderr() -> None:
            assert proc.stderr is not None
            while chunk := await proc.stderr.read(65536):
                stderr.extend(chunk)
                del stderr[:-_STDERR_KEPT]

        async def read_stdout() -> bytes:
            assert proc.stdout is not None
            out = bytearray()
            while chunk := await proc.stdout.read(65536):
                out.extend(chunk)
                if len(out) > max_output:
                    raise self.fail(f"{self.command!r:.80} printed more than {max_output} bytes; stopped")
            return bytes(out)

        drainer = asyncio.create_task(drain_stderr())
        try:
            out = await asyncio.wait_for(read_stdout(), timeout)
            code = await asyncio.wait_for(proc.wait(), max(1.0, timeout))
        except TimeoutError:
            raise self.fail(f"{self.command!r:.80} did not answer within {timeout:g}s; stopped") from None
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()  # this process's own child, by its pid
            # Read what is left (discarded): a pipe paused on a full buffer never reports its end,
            # and the process is not reaped until both pipes have ended.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_discard(proc.stdout), 10.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(drainer, 10.0)
            drainer.cancel()
            await proc.wait()
        if code != 0:
            lines = bytes(stderr).decode(errors="replace").strip().splitlines()
            said = f": {' '.join(lines[-1].split())[:200]}" if lines else ""
            raise self.fail(f"{self.command!r:.80} exited with {code}{said}")
        return parse_exec_credential(out, self.api_version, self.where)


async def _discard(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


def parse_exec_credential(data: bytes, api_version: str, where: str) -> ExecCredential:
    """A plugin's stdout, checked: an ExecCredential of ``api_version`` with a token or a
    certificate and key, and an optional RFC 3339 ``expirationTimestamp``."""
    def fail(problem: str) -> KubeconfigError:
        return KubeconfigError(f"{where}: the plugin's answer: {problem}")

    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise fail("not JSON") from None
    if not isinstance(doc, dict):
        raise fail("expected a JSON object")
    if doc.get("kind") != "ExecCredential":
        raise fail("kind: expected ExecCredential")
    if doc.get("apiVersion") != api_version:
        raise fail(f"apiVersion: expected {api_version} (as the kubeconfig asked)")
    status = doc.get("status")
    if not isinstance(status, dict):
        raise fail("status: expected an object")
    token, cert, key = status.get("token"), status.get("clientCertificateData"), status.get("clientKeyData")
    for name, value in (("token", token), ("clientCertificateData", cert), ("clientKeyData", key)):
        if value is not None and not isinstance(value, str):
            raise fail(f"status.{name}: expected a string")
    if not token and not (cert and key):
        raise fail("status: expected a token, or clientCertificateData and clientKeyData")
    expires = None
    stamp = status.get("expirationTimestamp")
    if stamp is not None:
        if not isinstance(stamp, str):
            raise fail("status.expirationTimestamp: expected an RFC 3339 time")
        try:
            expires = datetime.datetime.fromisoformat(stamp[:64])
        except ValueError:
            raise fail("status.expirationTimestamp: expected an RFC 3339 time") from None
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=datetime.UTC)
    if token:
        return ExecCredential(token=token, expires=expires)
    assert cert and key
    return ExecCredential(certificate=cert.encode(), key=key.encode(), expires=expires)


def cluster_info(cluster: Entry) -> dict[str, Any]:
    """The cluster as ``provideClusterInfo`` hands it to a plugin (KUBERNETES_EXEC_INFO's spec.cluster)."""
    info: dict[str, Any] = {"server": cluster.string("server") or ""}
    ca = cluster.data("certificate-authority-data")
    if ca is None and (ca_file := cluster.file("certificate-authority")) is not None:
        with contextlib.suppress(OSError):
            ca = ca_file.read_bytes()[:1024 * 1024]
    if ca:
        info["certificate-authority-data"] = base64.b64encode(ca).decode()
    for key in ("tls-server-name", "proxy-url"):
        if value := cluster.string(key):
            info[key] = value
    if cluster.boolean("insecure-skip-tls-verify"):
        info["insecure-skip-tls-verify"] = True
    extensions = cluster.body.get("extensions")
    if isinstance(extensions, list):
        for ext in extensions:
            if isinstance(ext, dict) and ext.get("name") == "client.authentication.k8s.io/exec":
                info["config"] = ext.get("extension")
    return info
