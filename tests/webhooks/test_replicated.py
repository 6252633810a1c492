"""``opd run --ha``: a replica serves its operator's webhooks as ``opd run`` does (both build their
operation through ``opd.orchestration.build_operation``; the replica's path passed no services before)."""

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


async def test_opd_run_ha_leader_answers_admission_reviews_over_tls(kubeconfig: Path, namespace: str,
                                                                    tmp_path: Path) -> None:
    handlers, ca, log_path = tmp_path / "handlers.py", tmp_path / "ca.pem", tmp_path / "run.log"
    handlers.write_text(HANDLERS)
    port = free_port()
    lease = f"wh-{uuid.uuid4().hex[:6]}"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "opd", "run", str(handlers), "-n", namespace, "--log-format", "text",
            "--ha", "leader", "--lease", lease, "--lease-namespace", namespace,
            stdout=log, stderr=subprocess.STDOUT,
            env=clean_env(KUBECONFIG=str(kubeconfig), WH_PORT=str(port), WH_CA=str(ca), HOME=str(tmp_path)))
    try:
        def ready() -> bool:
            assert proc.returncode is None, f"opd run --ha ended ({proc.returncode}):\n{log_path.read_text()}"
            return "opd: ready" in log_path.read_text()

        await eventually(ready, timeout=60)
        # Its services start before it is ready: a ready operator's webhooks answer.
        assert "webhook server listening" in log_path.read_text() and ca.exists(), log_path.read_text()
        context = ssl.create_default_context(cafile=str(ca))  # its own CA: a TLS server, verified
        async with aiohttp.ClientSession() as http:
            async def post(data: dict[str, str]) -> dict[str, Any]:
                async with http.post(f"https://127.0.0.1:{port}/validate/check", json=_review(data),
                                     ssl=context) as response:
                    assert response.status == 200, await response.text()
                    answer: dict[str, Any] = json.loads(await response.text())["response"]
                    return answer

            refused = await post({"refuse": "1"})
            assert refused["uid"] == "u-ha" and refused["allowed"] is False
            assert refused["status"] == {"code": 422, "message": "refused by the replica"}
            assert (await post({}))["allowed"] is True
        output = log_path.read_text()
        assert "ha: leader mode" in output and f"Lease {namespace}/{lease}" in output  # a replica indeed
    finally:
        if proc.returncode is None:  # stopped by its PID, as SIGTERM stops it in production
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0, log_path.read_text()
    assert "Traceback" not in log_path.read_text()
