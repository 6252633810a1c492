"""opd's own kubeconfig loader against the real API server: an exec plugin's token (renewed before
it expires) and a token file, for opd's requests and for a handler's ``api`` client."""

from __future__ import annotations

import datetime
import json
import sys
import textwrap
from pathlib import Path

from opd.kube import plain
from opd.kube.api import APIError, KubeClient
from opd.kube.credentials import Login, load_configuration

V1 = "client.authentication.k8s.io/v1"


def _admin(kubeconfig: Path) -> tuple[dict[str, object], str]:
    doc = json.loads(kubeconfig.read_text())
    return doc["clusters"][0]["cluster"], doc["users"][0]["user"]["token"]


def _with_user(kubeconfig: Path, path: Path, user: dict[str, object]) -> Path:
    cluster, _ = _admin(kubeconfig)
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": cluster}], "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}))
    return path


async def test_an_exec_plugins_token_serves_opd_and_handlers_and_is_renewed(
        kubeconfig: Path, namespace: str, tmp_path: Path) -> None:
    """The plugin's first token expires at once: the next request runs it again (a second token,
    the admin's); the handler's ``api`` client asks opd's credentials for the header too."""
    _, token = _admin(kubeconfig)
    runs = tmp_path / "runs"
    soon = datetime.datetime.now(datetime.UTC).isoformat()
    plugin = tmp_path / "plugin.py"
    plugin.write_text(f"#!{sys.executable}\n" + textwrap.dedent(f'''
        import json, os
        runs = int(open({str(runs)!r}).read()) + 1 if os.path.exists({str(runs)!r}) else 1
        open({str(runs)!r}, "w").write(str(runs))
        token = "not-yet-valid" if runs == 1 else {token!r}
        status = {{"token": token, "expirationTimestamp": {soon!r}}} if runs == 1 else {{"token": token}}
        print(json.dumps({{"apiVersion": "{V1}", "kind": "ExecCredential", "status": status}}))
    '''))
    plugin.chmod(0o700)
    path = _with_user(kubeconfig, tmp_path / "config", {"exec": {"command": str(plugin), "apiVersion": V1}})
    credentials, source = await load_configuration(Login(kubeconfig=str(path)))
    assert source == f"kubeconfig {path}" and runs.read_text() == "1"
    async with KubeClient(credentials) as kube:
        listed = await kube.get(f"/api/v1/namespaces/{namespace}/configmaps")  # renewed first: a valid token
        assert listed["kind"] == "ConfigMapList" and runs.read_text() == "2"
        api = kube.handler_client()
        made = await plain.request(api, "POST", f"/api/v1/namespaces/{namespace}/configmaps",
                                   body={"metadata": {"name": "by-handler"}})
        assert made["metadata"]["name"] == "by-handler"
        await kube.get(f"/api/v1/namespaces/{namespace}/configmaps/by-handler")
        assert runs.read_text() == "2"  # no expiry on the second token: not run again


async def test_a_token_file_is_read_again_when_rotated(kubeconfig: Path, namespace: str, tmp_path: Path) -> None:
    _, token = _admin(kubeconfig)
    (tmp_path / "token").write_text("not-a-token")
    path = _with_user(kubeconfig, tmp_path / "config", {"tokenFile": "token"})  # relative to the kubeconfig
    credentials, _ = await load_configuration(Login(kubeconfig=str(path)))
    async with KubeClient(credentials) as kube:
        try:
            await kube.get(f"/api/v1/namespaces/{namespace}/configmaps")
        except APIError as exc:
            assert exc.status == 401
        else:
            raise AssertionError("a request with no valid token was answered")
        (tmp_path / "token").write_text(token)
        listed = await kube.get(f"/api/v1/namespaces/{namespace}/configmaps")
        assert listed["kind"] == "ConfigMapList"
