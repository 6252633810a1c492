"""A cold start without kubernetes_asyncio's models (issue #22): ``import opd`` and an operator up
to its first request never import them; a handler that uses its ``api`` kwarg does, then. Nor does
opd import the official ``kubernetes`` client where it is installed (it configures it when imported)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from kubernetes_asyncio import client

MODELS = "kubernetes_asyncio.client.models"


def test_import_opd_imports_no_kubernetes_asyncio(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", "import sys, opd; print(sorted(m for m in sys.modules "
                           "if m.split('.')[0] in ('kubernetes_asyncio', 'kubernetes', 'urllib3')))"],
                          capture_output=True, text=True, timeout=120, check=True, cwd=tmp_path)
    assert done.stdout.strip() == "[]", done.stdout[:300]


async def test_opd_run_reaches_its_objects_without_the_models_until_a_handler_uses_api(
        api: client.ApiClient, kubeconfig: Path, namespace: str, tmp_path: Path) -> None:
    await client.CoreV1Api(api).create_namespaced_config_map(namespace, {"metadata": {"name": "seen"}})
    handlers = tmp_path / "handlers.py"
    handlers.write_text(textwrap.dedent(f'''
        import sys
        import opd
        from opd.kube import plain

        @opd.on.create("configmaps")
        async def created(name, api, **_):
            before = {MODELS!r} in sys.modules  # after the LIST that brought this object
            kubernetes = "kubernetes" in sys.modules  # installed here (opd[test]), never imported by opd
            found = await plain.request(api, "GET", f"/api/v1/namespaces/{namespace}/configmaps/{{name}}")
            print(f"HANDLER before={{before}} after={{{MODELS!r} in sys.modules}} got={{found['metadata']['name']}} "
                  f"kubernetes={{kubernetes}}", flush=True)
    '''))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "opd", "run", str(handlers), "-n", namespace,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path,
        env={**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(tmp_path)})
    lines: list[str] = []
    try:
        async def said() -> str:
            assert proc.stdout is not None
            while line := (await proc.stdout.readline()).decode():
                lines.append(line)
                if line.startswith("HANDLER "):
                    return line.strip()
            return ""

        line = await asyncio.wait_for(said(), 120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()  # our own child, by its pid
        try:
            await asyncio.wait_for(proc.wait(), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    assert line == "HANDLER before=False after=True got=seen kubernetes=False", "".join(lines)[-3000:]
