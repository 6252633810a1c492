"""``opd run --ha``: a replica serves its operator's webhooks as ``opd run`` does (both build their
operation through ``opd.orchestration.build_operation``; the replica's path passed no services before),
the leader and a standby alike (an admission review needs no Lease)."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from helpers.operators import eventually
from helpers.webhook_process import clean_env, free_port

HANDLERS = '''
import os
import opd


@opd.on.startup()
def configure(settings, **_):
    settings.admission.server = opd.WebhookServer(port=int(os.environ["WH_PORT"]), cadump=os.environ["WH_CA"])


@opd.on.validate("configmaps", id="check")
def check(body, **_):
    if "refuse" in (body.get("data") or {}):
        raise opd.AdmissionError("refused by the replica", code=422)
'''


def _review(data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u-ha", "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
        "resource": {"group": "", "version": "v1", "resource": "configmaps"},
        "operation": "CREATE", "namespace": "default", "name": "c",
        "object": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data}}}


class Replica:
    """``opd run --ha leader`` as a process; its webhook server on a free port, its CA in a file."""

    def __init__(self, folder: Path, name: str) -> None:
        self.name, self.port = name, free_port()
        self.ca, self.log = folder / f"{name}-ca.pem", folder / f"{name}.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, handlers: Path, kubeconfig: Path, namespace: str, lease: str) -> None:
        with self.log.open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "opd", "run", str(handlers), "-n", namespace, "--log-format", "text",
                "--ha", "leader", "--lease", lease, "--lease-namespace", namespace, "--identity", self.name,
                stdout=log, stderr=subprocess.STDOUT,
                env=clean_env(KUBECONFIG=str(kubeconfig), WH_PORT=str(self.port), WH_CA=str(self.ca),
                              HOME=str(self.log.parent)))

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def says(self, text: str) -> bool:
        assert self.proc is not None and self.proc.returncode is None, f"{self.name} ended:\n{self.output()}"
        return text in self.output()

    async def review(self, http: aiohttp.ClientSession, data: dict[str, str]) -> dict[str, Any]:
        context = ssl.create_default_context(cafile=str(self.ca))  # its own CA: a TLS server, verified
        async with http.post(f"https://127.0.0.1:{self.port}/validate/check", json=_review(data),
                             ssl=context) as response:
            assert response.status == 200, await response.text()
            answer: dict[str, Any] = json.loads(await response.text())["response"]
            return answer

    async def stop(self) -> int | None:
        """By its PID, as SIGTERM stops it in production; killed if it does not stop."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 60)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode


async def test_opd_run_ha_leader_and_standby_answer_admission_reviews_over_tls(kubeconfig: Path, namespace: str,
                                                                               tmp_path: Path) -> None:
    handlers = tmp_path / "handlers.py"
    handlers.write_text(HANDLERS)
    lease = f"wh-{uuid.uuid4().hex[:6]}"
    leader, standby = Replica(tmp_path, "r-one"), Replica(tmp_path, "r-two")
    try:
        await leader.start(handlers, kubeconfig, namespace, lease)
        await eventually(lambda: leader.says("opd: ha: leading"), timeout=60)
        await standby.start(handlers, kubeconfig, namespace, lease)
        await eventually(lambda: standby.says("opd: ready") and standby.says("opd: ha: standing by"), timeout=60)
        await eventually(lambda: leader.says("opd: ready"), timeout=60)
        async with aiohttp.ClientSession() as http:
            for replica in (leader, standby):
                # Its services start before it is ready: a ready operator's webhooks answer.
                assert replica.says("webhook server listening") and replica.ca.exists(), replica.output()
                refused = await replica.review(http, {"refuse": "1"})
                assert refused["uid"] == "u-ha" and refused["allowed"] is False, replica.name
                assert refused["status"] == {"code": 422, "message": "refused by the replica"}
                assert (await replica.review(http, {}))["allowed"] is True
    finally:
        codes = [await standby.stop(), await leader.stop()]
    assert codes == [0, 0], leader.output() + standby.output()
    assert "Traceback" not in leader.output() + standby.output()
