"""Kopf's login and embedding contract, on the local apiserver, written from Kopf's pages:

- Authentication: with no login handler, Kopf's default login configures the official
  ``kubernetes`` client as a side effect (a handler calls ``kubernetes.client.CoreV1Api()``
  without loading a config); ``login_via_client``, ``login_via_pykube``, ``login_with_kubeconfig``,
  ``login_with_service_account`` return ``ConnectionInfo`` and work in an ``on.login`` handler.
- Embedding / Health-checks: ``operator(..., liveness_endpoint=)`` serves the probe handlers' values.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import kubernetes  # type: ignore[import-untyped]
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes_asyncio import client

import opd as kopf
from opd.errors import ConfigError
from opd.kube import credentials
from opd.testing import eventually


@pytest.fixture(autouse=True)
def fresh_kubernetes_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The kubernetes client's default configuration is per process: each test starts without one,
    and without a ~/.kube/config to fall back on."""
    kubernetes.client.Configuration.set_default(None)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    yield
    kubernetes.client.Configuration.set_default(None)


@contextlib.asynccontextmanager
async def operating(registry: kopf.OperatorRegistry, namespace: str, **kwargs: Any) -> AsyncIterator[asyncio.Task[Any]]:
    """An embedded operator in this loop, until the block ends (ready first, or its error)."""
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(kopf.operator(registry=registry, namespaces=[namespace], stop_flag=stop,
                                             ready_flag=ready, install_signal_handlers=False, **kwargs))
    waiting = asyncio.create_task(ready.wait())
    try:
        await asyncio.wait({task, waiting}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
        assert ready.is_set(), "the operator did not become ready"
        yield task
    finally:
        waiting.cancel()
        stop.set()
        await asyncio.wait_for(asyncio.shield(task), 60)


def _configmap_writer(registry: kopf.OperatorRegistry, namespace: str) -> None:
    """A Kopf-style handler with the official client and no config loading of its own: for a ConfigMap
    labelled source, it lists namespaces and writes a copy (the test checks the copy in the cluster)."""

    @kopf.on.create("configmaps", labels={"role": "source"}, registry=registry)
    def copy(name: str, body: kopf.Body, **_: Any) -> None:
        core = kubernetes.client.CoreV1Api()
        seen = [ns.metadata.name for ns in core.list_namespace().items]
        core.create_namespaced_config_map(namespace, {
            "metadata": {"name": f"{name}-copy"},
            "data": {**(body.get("data") or {}), "saw_own_namespace": str(namespace in seen)},
        })


async def _copy_made(api: client.ApiClient, namespace: str, name: str) -> dict[str, str]:
    core = client.CoreV1Api(api)
    await core.create_namespaced_config_map(namespace, {  # type: ignore[arg-type]
        "metadata": {"name": name, "labels": {"role": "source"}}, "data": {"k": "v"}})

    async def copied() -> dict[str, str] | None:
        try:
            return dict((await core.read_namespaced_config_map(f"{name}-copy", namespace)).data)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    return await eventually(copied, timeout=30)  # type: ignore[no-any-return]


def _kubeconfig(kubeconfig: Path) -> dict[str, Any]:
    return json.loads(kubeconfig.read_text())  # type: ignore[no-any-return]  # the fixture's is JSON


# -- item 5: the default login configures the official client ---------------------------------------------------------

async def test_a_sync_handler_uses_the_kubernetes_client_without_loading_a_config(
        kubeconfig: Path, namespace: str, api: client.ApiClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    registry = kopf.OperatorRegistry()
    _configmap_writer(registry, namespace)
    async with operating(registry, namespace):
        copy = await _copy_made(api, namespace, "src")
    assert copy == {"k": "v", "saw_own_namespace": "True"}
    configured = kubernetes.client.Configuration.get_default_copy()
    assert configured.host == _kubeconfig(kubeconfig)["clusters"][0]["cluster"]["server"]


async def test_the_kubernetes_client_gets_the_kubeconfig_and_context_opd_uses(
        kubeconfig: Path, namespace: str, api: client.ApiClient, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit opd.Login(kubeconfig=, context=) decides for both: not $KUBECONFIG, not the
    file's current context (both point at a closed port here)."""
    good = _kubeconfig(kubeconfig)
    nowhere = {"name": "nowhere", "cluster": {"server": "https://127.0.0.1:9", "insecure-skip-tls-verify": True}}
    two = {**good, "clusters": [*good["clusters"], nowhere],
           "contexts": [*good["contexts"], {"name": "nowhere", "context": {"cluster": "nowhere",
                                                                           "user": good["users"][0]["name"]}}],
           "current-context": "nowhere"}
    (tmp_path / "two.json").write_text(json.dumps(two))
    (tmp_path / "env.json").write_text(json.dumps({**two, "contexts": two["contexts"][1:]}))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "env.json"))
    registry = kopf.OperatorRegistry()
    _configmap_writer(registry, namespace)
    login = kopf.Login(kubeconfig=str(tmp_path / "two.json"), context=good["current-context"])
    async with operating(registry, namespace, login=login):
        assert (await _copy_made(api, namespace, "ctx"))["k"] == "v"
    configured = kubernetes.client.Configuration.get_default_copy()
    assert configured.host == good["clusters"][0]["cluster"]["server"]
    # The key's name is the client's: "authorization" up to kubernetes 31 or so, "BearerToken" after.
    keys = {k: v for k, v in configured.api_key.items() if k in ("BearerToken", "authorization")}
    assert list(keys.values()) == [f"Bearer {good['users'][0]['user']['token']}"]


def _service_account(kubeconfig: Path, namespace: str, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """A pod's view in this process: a service account 'pod' that may write ConfigMaps in the
    namespace, its token and CA where a pod has them, the apiserver in the pod's environment."""
    cfg = _kubeconfig(kubeconfig)
    for args in (["create", "serviceaccount", "pod"],
                 ["create", "role", "pod", "--verb=create,get,list,watch,patch", "--resource=configmaps,events"],
                 ["create", "rolebinding", "pod", "--role=pod", f"--serviceaccount={namespace}:pod"]):
        subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "-n", namespace, *args],
                       check=True, capture_output=True, timeout=60)
    token = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "-n", namespace, "create", "token", "pod"],
                           check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    mounted = tmp_path / "serviceaccount"
    mounted.mkdir()
    (mounted / "token").write_text(token)
    (mounted / "ca.crt").write_bytes(Path(cfg["clusters"][0]["cluster"]["certificate-authority"]).read_bytes())
    (mounted / "namespace").write_text(namespace)
    host, port = cfg["clusters"][0]["cluster"]["server"].removeprefix("https://").rsplit(":", 1)
    monkeypatch.setattr(credentials, "_SA_TOKEN", mounted / "token")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    return token, f"https://{host}:{port}"


async def test_in_a_pod_the_kubernetes_client_gets_the_service_account(
        kubeconfig: Path, namespace: str, api: client.ApiClient, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    token, server = _service_account(kubeconfig, namespace, tmp_path, monkeypatch)
    registry = kopf.OperatorRegistry()
    made: list[str] = []

    @kopf.on.startup(registry=registry)
    def startup(**_: Any) -> None:
        core = kubernetes.client.CoreV1Api()
        core.create_namespaced_config_map(namespace, {"metadata": {"name": "from-pod"}})
        try:
            core.list_namespaced_secret(namespace)
        except kubernetes.client.ApiException as exc:  # the account's identity, not the admin's
            made.append(f"{exc.status} {exc.body}")

    async with operating(registry, namespace):
        pass
    cm = await client.CoreV1Api(api).read_namespaced_config_map("from-pod", namespace)
    assert cm.metadata.name == "from-pod"
    assert made and made[0].startswith("403") and f"system:serviceaccount:{namespace}:pod" in made[0]
    configured = kubernetes.client.Configuration.get_default_copy()
    assert configured.host == server
    # Its scheme: "bearer"; the key's name is the client's ("authorization" in older ones).
    assert (configured.api_key.get("BearerToken") or configured.api_key["authorization"]).split(" ", 1)[1] == token


def test_opd_never_imports_kubernetes_itself_and_an_operator_imports_it_only_if_installed(
        kubeconfig: Path, tmp_path: Path) -> None:
    """In a fresh process: ``import opd`` does not import kubernetes; a handler that imports it late
    finds it configured; with the package absent (blocked), the operator runs and does not import it.
    Prints what importing the kubernetes client costs in that process (for the README's figure)."""
    script = tmp_path / "late.py"
    script.write_text(textwrap.dedent('''
        import sys, threading, time
        blocked = sys.argv[1] == "absent"
        if blocked:
            sys.modules["kubernetes"] = None  # as if not installed
        import opd
        assert "kubernetes" not in sys.modules or blocked, "import opd imported kubernetes"
        registry = opd.OperatorRegistry()
        stop = threading.Event()

        @opd.on.startup(registry=registry)
        def startup(**_):
            if not blocked:
                import kubernetes
                print("NAMESPACES", len(kubernetes.client.CoreV1Api().list_namespace().items) > 0, flush=True)
            print("IMPORTED", sys.modules.get("kubernetes.client") is not None, flush=True)
            stop.set()

        opd.run(registry=registry, stop_flag=stop, namespaces=["default"])
        started = time.perf_counter()
    '''))
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(tmp_path)}
    present = subprocess.run([sys.executable, str(script), "present"], capture_output=True, text=True,
                             timeout=120, env=env)
    assert "NAMESPACES True" in present.stdout and "IMPORTED True" in present.stdout, present.stderr[-2000:]
    absent = subprocess.run([sys.executable, str(script), "absent"], capture_output=True, text=True,
                            timeout=120, env=env)
    assert "IMPORTED False" in absent.stdout, absent.stderr[-2000:]
    assert "Traceback" not in absent.stderr
    cost = subprocess.run([sys.executable, "-c", "import time; t = time.perf_counter(); import kubernetes.client; "
                           "print(f'{time.perf_counter() - t:.2f}')"], capture_output=True, text=True, timeout=120)
    print(f"importing the kubernetes client: {cost.stdout.strip()} s (in a thread, before connecting)")


async def test_the_daemons_connection_configures_the_client_only_when_a_plugin_imported_it(
        kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``opd start`` connects once through credentials.connect(): a plugin that imports kubernetes
    gets it configured; a daemon whose plugins do not pays no import."""
    async with await credentials.connect(kopf.Login(kubeconfig=str(kubeconfig)), kopf.OperatorSettings().networking):
        pass
    assert kubernetes.client.Configuration.get_default_copy().host == \
        _kubeconfig(kubeconfig)["clusters"][0]["cluster"]["server"]
    kubernetes.client.Configuration.set_default(None)
    with monkeypatch.context() as blocked:
        blocked.setitem(sys.modules, "kubernetes", None)  # no plugin imported it (and it cannot be)
        async with await credentials.connect(kopf.Login(kubeconfig=str(kubeconfig)),
                                             kopf.OperatorSettings().networking):
            pass
    assert kubernetes.client.Configuration.get_default_copy().host == kubernetes.client.Configuration().host


# -- item 10: Kopf's login helpers ------------------------------------------------------------------------------------

async def _login_runs(api: client.ApiClient, namespace: str, helper: Any, **operator_kwargs: Any) -> list[Any]:
    """An operator whose one login handler returns what ``helper`` does (as Kopf's page shows);
    it must connect with it and handle a ConfigMap. Returns what the handler returned."""
    registry = kopf.OperatorRegistry()
    returned: list[Any] = []

    @kopf.on.login(registry=registry)
    def login_fn(**kwargs: Any) -> Any:
        returned.append(helper(**kwargs))
        return returned[-1]

    seen: list[str] = []

    @kopf.on.create("configmaps", registry=registry)
    def created(name: str, **_: Any) -> None:
        seen.append(name)

    async with operating(registry, namespace, **operator_kwargs):
        await client.CoreV1Api(api).create_namespaced_config_map(  # type: ignore[arg-type]
            namespace, {"metadata": {"name": "logged-in"}})
        await eventually(lambda: "logged-in" in seen, timeout=30)
    return returned


async def test_login_via_client_returns_the_clients_credentials_and_configures_it(
        kubeconfig: Path, namespace: str, api: client.ApiClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    cfg = _kubeconfig(kubeconfig)
    [info] = await _login_runs(api, namespace, kopf.login_via_client)
    assert isinstance(info, kopf.ConnectionInfo)
    assert info.server == cfg["clusters"][0]["cluster"]["server"]
    assert (info.scheme, info.token) == ("Bearer", cfg["users"][0]["user"]["token"])
    assert info.ca_path and Path(info.ca_path).read_bytes() == \
        Path(cfg["clusters"][0]["cluster"]["certificate-authority"]).read_bytes()
    assert info.priority == 10  # Kopf's: below pykube's
    assert kubernetes.client.Configuration.get_default_copy().host == info.server


async def test_login_via_pykube_reads_pykubes_config(
        kubeconfig: Path, namespace: str, api: client.ApiClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    cfg = _kubeconfig(kubeconfig)
    [info] = await _login_runs(api, namespace, kopf.login_via_pykube)
    assert info.server == cfg["clusters"][0]["cluster"]["server"]
    assert info.token == cfg["users"][0]["user"]["token"]
    assert info.ca_path == cfg["clusters"][0]["cluster"]["certificate-authority"]
    assert info.default_namespace == "default"  # pykube's, for a context without a namespace
    assert info.priority == 20


def test_login_via_pykube_and_via_client_say_when_their_library_is_absent(
        kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from loguru import logger

    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setitem(sys.modules, "pykube", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "kubernetes", None)
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message).strip()), level="INFO", format="{message}")
    try:
        assert kopf.login_via_pykube() is None
        assert kopf.login_via_client() is None
    finally:
        logger.remove(sink)
    assert lines == [
        "opd: login_via_pykube: pykube-ng is not installed (pip install pykube-ng); no credentials from it",
        "opd: login_via_client: the kubernetes package is not installed (pip install kubernetes); "
        "no credentials from it",
    ]


async def test_login_with_kubeconfig_returns_the_current_contexts_credentials(
        kubeconfig: Path, namespace: str, api: client.ApiClient, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """As Kopf's page: its fields are usable as they are (here, a copy with another priority, which
    connects with the fields alone); a relative CA path is the kubeconfig file's neighbour."""
    cfg = _kubeconfig(kubeconfig)
    ca = Path(cfg["clusters"][0]["cluster"]["certificate-authority"])
    (tmp_path / "ca.crt").write_bytes(ca.read_bytes())
    relative = json.loads(json.dumps(cfg))
    relative["clusters"][0]["cluster"]["certificate-authority"] = "ca.crt"
    relative["contexts"][0]["context"]["namespace"] = namespace
    (tmp_path / "config.json").write_text(json.dumps(relative))
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'missing.json'}{os.pathsep}{tmp_path / 'config.json'}")
    monkeypatch.chdir(tmp_path.parent)
    [info] = await _login_runs(api, namespace, lambda **kw: dataclasses.replace(kopf.login_with_kubeconfig(**kw),
                                                                                priority=99))
    assert info.server == cfg["clusters"][0]["cluster"]["server"]
    assert info.ca_path == str(tmp_path / "ca.crt")
    assert info.token == cfg["users"][0]["user"]["token"]
    assert (info.default_namespace, info.priority) == (namespace, 99)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing.json"))
    assert kopf.login_with_kubeconfig() is None  # no such file: not this helper's case


async def test_login_with_service_account_returns_the_pods_credentials(
        kubeconfig: Path, namespace: str, api: client.ApiClient, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    token, server = _service_account(kubeconfig, namespace, tmp_path, monkeypatch)
    [info] = await _login_runs(api, namespace, lambda **kw: (kopf.login_with_service_account(**kw)
                                                             or kopf.login_with_kubeconfig(**kw)))
    assert (info.server, info.token, info.default_namespace) == (server, token, namespace)
    assert info.ca_path == str(tmp_path / "serviceaccount" / "ca.crt")
    monkeypatch.setattr(credentials, "_SA_TOKEN", tmp_path / "nothing" / "token")
    assert kopf.login_with_service_account() is None  # not in a pod


async def test_a_login_handler_limited_by_retries_stops_the_operator_in_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kopf's page: ``@kopf.on.login(retries=3)`` around ``login_via_pykube`` limits the attempts;
    with no credentials anywhere, the operator stops with the helper's one-line reason."""
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    registry = kopf.OperatorRegistry()
    attempts: list[int] = []

    @kopf.on.login(retries=3, backoff=0.1, registry=registry)
    def login_fn(**kwargs: Any) -> Any:
        attempts.append(1)
        return kopf.login_via_pykube(**kwargs)

    with pytest.raises(kopf.OpdError) as caught:
        await asyncio.wait_for(kopf.operator(registry=registry, install_signal_handlers=False), 60)
    assert len(attempts) == 3
    message = str(caught.value)
    assert "login_fn" in message and "login_via_pykube: no credentials, neither in-cluster nor in a kubeconfig" \
        in message and "\n" not in message


def test_connection_info_takes_one_of_path_and_data() -> None:
    with pytest.raises(ValueError, match="both ca_path and ca_data are set; give one"):
        kopf.ConnectionInfo(server="https://h", ca_path="/ca.crt", ca_data=b"...")
    with pytest.raises(ValueError, match="both certificate_path and certificate_data are set"):
        kopf.ConnectionInfo(server="https://h", certificate_path="c", certificate_data=b"...")
    info = kopf.ConnectionInfo(server="https://h", token="t", proxy_url="http://proxy:3128", trust_env=True,
                               certificate_path="~/client.crt")
    cfg = credentials.configuration_from(info)
    assert cfg.proxy == "http://proxy:3128"
    assert cfg.cert_file == os.path.expanduser("~/client.crt")  # Kopf's page writes '~/.minikube/client.crt'


SECRET = "s3cr3t-t0ken"
_KEYS = st.sampled_from(["name", "cluster", "user", "context", "server", "namespace", "current-context",
                         "clusters", "users", "contexts", "certificate-authority", "certificate-authority-data",
                         "client-certificate", "insecure-skip-tls-verify", "auth-provider", "config", "username",
                         "proxy-url"])
_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.just("https://127.0.0.1:6443"), st.just("c"),
                    st.just("u"), st.text(max_size=8))
# Credentials where a kubeconfig keeps them, in users that may be malformed (no name, wrong types).
_CREDENTIALS = st.dictionaries(st.sampled_from(["token", "password", "client-key-data", "client-certificate-data"]),
                               st.just(SECRET), max_size=3)
_USER = st.fixed_dictionaries({}, optional={"name": st.sampled_from(["u", "c", 3]), "user": _CREDENTIALS})
_GENERIC = st.recursive(_LEAVES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=5),
                        max_leaves=25)
_DOCS = st.one_of(_GENERIC, st.builds(lambda doc, users: {**doc, "users": users},
                                      st.dictionaries(_KEYS, _GENERIC, max_size=5), st.lists(_USER, max_size=3)))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=_DOCS, raw=st.one_of(st.none(), st.text(max_size=60)))
def test_login_with_kubeconfig_reads_any_file_as_info_or_one_line(
        doc: Any, raw: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kubeconfig of any shape (or any text) is a ConnectionInfo or a one-line LoginError that
    never quotes the file (a YAML error's snippet could be a token)."""
    path = tmp_path / "config"
    path.write_text(f"{raw}\ntoken: *{SECRET}\n" if raw is not None else yaml.safe_dump(doc))
    monkeypatch.setenv("KUBECONFIG", str(path))
    try:
        info = kopf.login_with_kubeconfig()
    except kopf.LoginError as exc:
        assert "\n" not in str(exc) and SECRET not in str(exc)
    else:
        assert isinstance(info, kopf.ConnectionInfo) and SECRET not in repr(info)


@settings(max_examples=300, deadline=None)
@given(url=st.one_of(st.text(max_size=40), st.builds(lambda h, p, x: f"http://{h}:{p}/{x}",
                                                      st.text(max_size=10), st.text(max_size=6), st.text(max_size=6))))
def test_a_liveness_url_is_an_address_or_one_line(url: str) -> None:
    from opd.orchestration import liveness_address

    try:
        host, port, path = liveness_address(url)
    except ConfigError as exc:
        assert str(exc).startswith("liveness_endpoint: expected http://HOST:PORT/PATH") and "\n" not in str(exc)[:60]
    else:
        assert host and 0 <= port <= 65535 and path.startswith("/")


# -- item 8: the liveness endpoint of an embedded operator ------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _probing_registry(calls: list[int], fail: bool = False) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.probe(id="now", registry=registry)
    def now(**_: Any) -> str:
        calls.append(1)
        return f"call {len(calls)}"

    @kopf.on.probe(id="answer", registry=registry)
    async def answer(memo: kopf.Memo, **_: Any) -> Any:
        if fail:
            raise RuntimeError("the DSN postgres://user:s3cret@db is down")
        return memo.get("answer")

    return registry


async def test_an_embedded_operator_serves_the_probes_at_its_liveness_endpoint(
        kubeconfig: Path, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    url = f"http://127.0.0.1:{_free_port()}/healthz"
    calls: list[int] = []
    async with operating(_probing_registry(calls), namespace, liveness_endpoint=url, memo=kopf.Memo(answer=42)):
        first = await asyncio.to_thread(_get, url)
        again = await asyncio.to_thread(_get, url)
    assert first == (200, {"now": "call 1", "answer": 42})
    assert again == first  # Kopf's page: cached for a reasonable period
    with pytest.raises(urllib.error.URLError):  # stopped with the operator
        await asyncio.to_thread(urllib.request.urlopen, url, timeout=5)


async def test_a_failing_probe_is_a_500_that_names_only_the_errors_type(
        kubeconfig: Path, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    url = f"http://127.0.0.1:{_free_port()}/healthz"
    tasks = await kopf.spawn_tasks(registry=_probing_registry([], fail=True), namespaces=[namespace],
                                   liveness_endpoint=url, install_signal_handlers=False)
    try:
        status, body = await asyncio.to_thread(_get, url)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=60)
    assert (status, body) == (500, {"now": "call 1", "answer": {"error": "RuntimeError"}})


async def test_a_liveness_endpoint_that_cannot_listen_is_one_line(
        kubeconfig: Path, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"^liveness_endpoint: cannot listen on 127\.0\.0\.1:{port}: "):
            await kopf.operator(registry=_probing_registry([]), namespaces=[namespace],
                                liveness_endpoint=f"http://127.0.0.1:{port}/healthz", install_signal_handlers=False)
    with pytest.raises(ConfigError, match=r"^liveness_endpoint: expected http://HOST:PORT/PATH"):
        await kopf.operator(registry=_probing_registry([]), liveness_endpoint="tcp://0.0.0.0:8080")


def test_run_in_a_thread_serves_liveness_until_its_stop_flag(kubeconfig: Path, namespace: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    url = f"http://127.0.0.1:{_free_port()}/{uuid.uuid4().hex[:6]}"
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=kopf.run, kwargs={
        "registry": _probing_registry([]), "namespaces": [namespace], "liveness_endpoint": url,
        "stop_flag": stop, "ready_flag": ready, "memo": kopf.Memo(answer="yes")})
    thread.start()
    try:
        assert ready.wait(60)
        assert _get(url) == (200, {"now": "call 1", "answer": "yes"})
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()


async def test_opd_run_ha_serves_liveness_through_the_same_endpoint(
        kubeconfig: Path, namespace: str, tmp_path: Path) -> None:
    """``opd run --ha leader --liveness``: the replica's operation answers the probes."""
    handlers = tmp_path / "probed.py"
    handlers.write_text("import opd as kopf\n\n@kopf.on.probe(id='answer')\ndef answer(**_):\n    return 42\n")
    url = f"http://127.0.0.1:{_free_port()}/healthz"
    with (tmp_path / "run.log").open("w") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "opd", "run", str(handlers), "-n", namespace, "--ha", "leader",
            "--lease-namespace", namespace, "-L", url, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(tmp_path)})
        try:
            async def answered() -> Any:
                try:
                    return await asyncio.to_thread(_get, url)
                except OSError:
                    return None

            assert await eventually(answered, timeout=60) == (200, {"answer": 42})
        finally:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    assert "Traceback" not in (tmp_path / "run.log").read_text()


def test_run_takes_kopfs_loop_namespace_and_peering_arguments(kubeconfig: Path, namespace: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Kopf's ``run(loop=...)`` runs in that loop; its older ``namespace=`` is one namespace;
    ``standalone=``/``priority=``/``peering_name=`` are accepted and said once (opd never peers)."""
    from loguru import logger

    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    loop = asyncio.new_event_loop()
    seen: list[Any] = []
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    async def startup(**_: Any) -> None:
        seen.append(asyncio.get_running_loop())

    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message).strip()), level="INFO", format="{message}")
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=kopf.run, kwargs={
        "loop": loop, "registry": registry, "namespace": namespace, "standalone": True, "priority": 100,
        "peering_name": "example", "stop_flag": stop, "ready_flag": ready})
    thread.start()
    try:
        assert ready.wait(60)
    finally:
        stop.set()
        thread.join(60)
        logger.remove(sink)
    assert not thread.is_alive() and seen == [loop]
    loop.close()
    assert any(f"serving 0 resource(s) namespaces {namespace} " in line for line in lines), lines
    assert sum("priority= and peering_name= (Kopf's peering) are not used" in line for line in lines) == 1
