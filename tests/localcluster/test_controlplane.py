"""The local control plane: a real kube-apiserver that serves CRDs and watches, stopped by PID."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import socket
import ssl
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.crds import CRD_GROUP, make_api
from kubernetes_asyncio import client, watch

from opd.localcluster import LocalControlPlane

pytestmark = pytest.mark.apiserver  # some start control planes of their own, not the fixture's


def _pid_alive(pid: int) -> bool:
    """Running, and not a zombie (detached children are reaped by init, if ever)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _opd(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opd", *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )


async def test_crd_object_seen_on_watch(api: client.ApiClient, crd: str, namespace: str) -> None:
    objects = client.CustomObjectsApi(api)
    listing = await objects.list_namespaced_custom_object(CRD_GROUP, "v1", namespace, crd)
    rv = listing["metadata"]["resourceVersion"]

    seen: list[tuple[str, str]] = []

    async def watch_until_added() -> None:
        w = watch.Watch()
        async with w.stream(
            objects.list_namespaced_custom_object, CRD_GROUP, "v1", namespace, crd,
            resource_version=rv, allow_watch_bookmarks=True, timeout_seconds=30,
        ) as stream:
            async for event in stream:
                seen.append((event["type"], event["object"]["metadata"]["name"]))
                if event["type"] == "ADDED":
                    return

    watcher = asyncio.create_task(watch_until_added())
    await objects.create_namespaced_custom_object(
        CRD_GROUP, "v1", namespace, crd,
        {"apiVersion": f"{CRD_GROUP}/v1", "kind": "KopfExample",
         "metadata": {"name": "smoke"}, "spec": {"field": "value"}},
    )
    await asyncio.wait_for(watcher, timeout=30)
    assert ("ADDED", "smoke") in seen

    # The status subresource is served: a write there does not touch the spec.
    await objects.patch_namespaced_custom_object_status(
        CRD_GROUP, "v1", namespace, crd, "smoke", {"status": {"ok": True}},
        _content_type="application/merge-patch+json",
    )
    obj = await objects.get_namespaced_custom_object(CRD_GROUP, "v1", namespace, crd, "smoke")
    assert obj["status"] == {"ok": True}
    assert obj["spec"] == {"field": "value"}


async def test_namespaces_finish_deleting(
    control_plane: LocalControlPlane, api: client.ApiClient
) -> None:
    assert control_plane.assets is not None
    if control_plane.assets.kube_controller_manager is None:
        pytest.skip("kube-controller-manager not built")
    core = client.CoreV1Api(api)
    await core.create_namespace({"metadata": {"name": "opd-deleted-ns"}})
    await core.create_namespaced_config_map("opd-deleted-ns", {"metadata": {"name": "x"}})
    await core.delete_namespace("opd-deleted-ns")
    for _ in range(300):
        try:
            await core.read_namespace("opd-deleted-ns")
        except client.ApiException as exc:
            assert exc.status == 404
            return
        await asyncio.sleep(0.1)
    pytest.fail("namespace still present after 30s")


def test_start_and_stop_leave_no_process(control_plane: LocalControlPlane) -> None:
    cp = LocalControlPlane(assets=control_plane.assets)
    cp.start()
    pids = cp.pids
    workdir = cp.workdir
    assert {"etcd", "kube-apiserver"} <= set(pids)
    assert all(_pid_alive(pid) for pid in pids.values())

    async def namespaces() -> list[str]:
        async with await make_api(cp.kubeconfig) as api:
            listing = await client.CoreV1Api(api).list_namespace()
            return [ns.metadata.name for ns in listing.items]

    assert "default" in asyncio.run(namespaces())
    cp.stop()
    assert not any(_pid_alive(pid) for pid in pids.values())
    assert workdir is not None and not workdir.exists()
    cp.stop()  # idempotent


def test_apiserver_restart_keeps_data(control_plane: LocalControlPlane) -> None:
    with LocalControlPlane(assets=control_plane.assets, controller_manager=False) as cp:

        async def roundtrip(create: bool) -> str:
            async with await make_api(cp.kubeconfig) as api:
                core = client.CoreV1Api(api)
                if create:
                    await core.create_namespaced_config_map(
                        "default", {"metadata": {"name": "kept"}, "data": {"k": "v"}}
                    )
                cm = await core.read_namespaced_config_map("kept", "default")
                return str(cm.data["k"])

        assert asyncio.run(roundtrip(create=True)) == "v"
        old_pid = cp.pids["kube-apiserver"]
        cp.restart_apiserver()
        assert not _pid_alive(old_pid)
        assert asyncio.run(roundtrip(create=False)) == "v"


@pytest.fixture(scope="module")
def second_cluster(control_plane: LocalControlPlane) -> Iterator[LocalControlPlane]:
    """Another cluster beside the session's, with every process opd starts."""
    with LocalControlPlane(assets=control_plane.assets) as cp:
        yield cp


def _get(cp: LocalControlPlane, path: str, token: str) -> int:
    ctx = ssl.create_default_context(cafile=str(cp.ca_file))
    request = urllib.request.Request(f"{cp.server}{path}", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, context=ctx, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_each_cluster_has_its_own_random_admin_token(
    control_plane: LocalControlPlane, second_cluster: LocalControlPlane
) -> None:
    tokens = {control_plane.token, second_cluster.token}
    assert len(tokens) == 2 and all(len(t) >= 40 for t in tokens)
    assert second_cluster.token in (second_cluster.workdir or Path()).joinpath("tokens.csv").read_text()
    assert second_cluster.token in second_cluster.kubeconfig.read_text()
    assert _get(second_cluster, "/api/v1/namespaces", second_cluster.token) == 200
    assert _get(second_cluster, "/api/v1/namespaces", control_plane.token) == 401
    assert _get(second_cluster, "/api/v1/namespaces", "opd-local-admin-token") == 401  # the old fixed one


def _modes(folder: Path) -> dict[str, list[str]]:
    """What in ``folder`` others could read or enter: folders not 0700, files not 0600."""
    wrong: dict[str, list[str]] = {"folders": [], "files": []}
    for path in [folder, *folder.rglob("*")]:
        mode = path.lstat().st_mode
        if stat.S_ISDIR(mode) and stat.S_IMODE(mode) != 0o700:
            wrong["folders"].append(f"{path.relative_to(folder)} {stat.S_IMODE(mode):o}")
        elif stat.S_ISREG(mode) and stat.S_IMODE(mode) != 0o600:
            wrong["files"].append(f"{path.relative_to(folder)} {stat.S_IMODE(mode):o}")
    return wrong


def test_a_clusters_folder_is_its_users_alone(second_cluster: LocalControlPlane) -> None:
    folder = second_cluster.workdir
    assert folder is not None
    names = {p.name for p in folder.rglob("*")}
    assert {"tokens.csv", "kubeconfig", "ca.key", "apiserver.key", "sa.key", "etcd", "etcd.log"} <= names
    assert _modes(folder) == {"folders": [], "files": []}


def _listening_tcp_inodes() -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                inodes.add(fields[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                found.add(target[len("socket:["):-1])
    return found


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self._path)


def test_etcd_listens_on_no_tcp_port_only_on_its_unix_socket(second_cluster: LocalControlPlane) -> None:
    etcd, apiserver = second_cluster.pids["etcd"], second_cluster.pids["kube-apiserver"]
    listening = _listening_tcp_inodes()
    assert _socket_inodes(apiserver) & listening  # the check sees a TCP listener where there is one
    assert not _socket_inodes(etcd) & listening
    argv = Path(f"/proc/{etcd}/cmdline").read_bytes().decode().split("\0")
    assert not any("http://" in arg or "https://" in arg for arg in argv), argv
    assert "--etcd-servers=unix://" in Path(f"/proc/{apiserver}/cmdline").read_bytes().decode()
    sock = second_cluster.etcd_socket
    assert stat.S_ISSOCK(sock.lstat().st_mode)
    connection = _UnixHTTPConnection(str(sock))  # the way in, for the folder's owner
    connection.request("GET", "/version")
    assert b"etcdserver" in connection.getresponse().read()
    connection.close()


def test_cli_detached_cluster_start_status_stop(
    control_plane: LocalControlPlane, tmp_path: Path
) -> None:
    assert control_plane.assets is not None
    env = {"XDG_CACHE_HOME": str(tmp_path), "OPD_CONTROL_PLANE_ASSETS": str(control_plane.assets.folder)}
    started = _opd("local-cluster", "start", "--detach", env=env)
    assert started.returncode == 0, started.stderr
    assert started.stdout.startswith("export KUBECONFIG=")
    folder = tmp_path / "opd" / "local-cluster"
    assert {"state.json", "kubeconfig", "tokens.csv"} <= {p.name for p in folder.iterdir()}
    assert _modes(folder) == {"folders": [], "files": []}
    status = _opd("local-cluster", "status", env=env)
    assert status.returncode == 0
    pids = [int(line.rsplit(" ", 1)[1]) for line in status.stdout.splitlines() if ": pid " in line]
    assert len(pids) >= 2 and all(_pid_alive(p) for p in pids)

    again = _opd("local-cluster", "start", "--detach", env=env)  # repeatable: the README's command 1
    assert again.returncode == 0
    assert "already running" in again.stderr
    assert again.stdout == started.stdout
    foreground = _opd("local-cluster", "start", env=env)
    assert foreground.returncode == 1
    assert "already running" in foreground.stderr

    stopped = _opd("local-cluster", "stop", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert not any(_pid_alive(p) for p in pids)
    assert _opd("local-cluster", "status", env=env).returncode == 1


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"OPD_CONTROL_PLANE_ASSETS": "/nonexistent/opd-assets"},
         "no etcd and kube-apiserver in /nonexistent"),
        ({"OPD_CONTROL_PLANE_ASSETS": "", "XDG_CACHE_HOME": "/nonexistent/cache"},
         "run 'opd local-cluster install'"),
    ],
)
def test_missing_control_plane_is_one_line(env: dict[str, str], needle: str) -> None:
    result = _opd("local-cluster", "start", env=env, timeout=30)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2  # our progress line, then the error
    assert lines[1].startswith("Error: ") and needle in lines[1]


def test_cli_version_and_help() -> None:
    version = _opd("--version")
    assert version.returncode == 0 and "opd" in version.stdout
    helped = _opd("local-cluster", "--help")
    assert helped.returncode == 0 and "install" in helped.stdout
