"""`opd run` as a process with an admission handler and a converter on a webhook server over TLS
on a free loopback port: what tests post hostile requests to, and whose memory they read."""

from __future__ import annotations

import functools
import os
import re
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

GROUP = "fuzz.opd.dev"
CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": f"bolts.{GROUP}"},
    "spec": {"group": GROUP, "scope": "Namespaced", "names": {"plural": "bolts", "singular": "bolt", "kind": "Bolt"},
             "versions": [{"name": v, "served": True, "storage": v == "v1", "schema": {"openAPIV3Schema": {
                 "type": "object", "x-kubernetes-preserve-unknown-fields": True}}} for v in ("v1", "v2")]},
}

HANDLERS = '''
import functools
import os
import opd
from kubernetes_asyncio import client, config


@opd.on.startup()
def configure(settings, **_):
    cap = os.environ.get("WH_MAX_CONNECTIONS")
    settings.admission.server = opd.WebhookServer(port=int(os.environ["WH_PORT"]), cadump=os.environ["WH_CA"],
                                                  **({"max_connections": int(cap)} if cap else {}))


@opd.on.validate("configmaps", id="check")
async def check(body, **_):
    data = body.get("data") or {}
    if "api-error" in data:  # a real refusal by the API server: its exception carries headers
        await config.load_kube_config()
        async with client.ApiClient() as api:
            await client.CoreV1Api(api).read_namespace("no-such-namespace-opd")
    if "crash" in data:
        raise RuntimeError("boom\\na second line")
    if "refuse" in data:
        raise opd.AdmissionError("refused by the test", code=422)


@opd.on.convert("bolts.fuzz.opd.dev", from_version="v1", to_version="v2")
def up(body, **_):
    body.setdefault("spec", {})["v"] = 2


@opd.on.convert("bolts.fuzz.opd.dev", from_version="v2", to_version="v1")
def down(body, **_):
    body.setdefault("spec", {})["v"] = 1
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("OPD_") and k not in ("PYTHONPATH", "VIRTUAL_ENV", "NOTIFY_SOCKET")}
    return {**env, **extra}


class OpdRun:
    """The process; ``url`` is its webhook server's, ``ssl`` trusts its CA."""

    def __init__(self, folder: Path, kubeconfig: Path, namespace: str, **env: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.port = free_port()
        self.ca = folder / "ca.pem"
        self.log = folder / "run.log"
        handlers = folder / "handlers.py"
        handlers.write_text(HANDLERS)
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "opd", "run", str(handlers), "-n", namespace, "--log-format", "text"],
                stdout=out, stderr=subprocess.STDOUT,
                env=clean_env(KUBECONFIG=str(kubeconfig), WH_PORT=str(self.port), WH_CA=str(self.ca), **env))
        self.url = f"https://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise AssertionError(f"opd run ended ({self.popen.returncode}):\n{self.output()}")
            if "webhook server listening" in self.output() and self.ca.exists() and " ready" in self.output():
                return
            time.sleep(0.2)
        raise AssertionError(f"opd run not ready in {timeout:g}s:\n{self.output()}")

    @functools.cached_property
    def ssl(self) -> ssl.SSLContext:  # one context: aiohttp pools connections per context
        return ssl.create_default_context(cafile=str(self.ca))

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def rss(self) -> int:
        """Resident memory of the process, in bytes (/proc/<pid>/status VmRSS)."""
        text = Path(f"/proc/{self.popen.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
        assert match, text
        return int(match.group(1)) * 1024

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
