"""Admission and conversion webhooks on the real kube-apiserver, which calls opd's server over TLS
on loopback (it checks the certificate against the caBundle opd wrote): refusals, warnings,
mutations, dry runs, operation filters; a CRD's versions converted both ways; two plugins under
``opd start`` on one server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
import uuid
from collections.abc import AsyncIterator
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers.crds import ensure_crd, make_api
from helpers.operators import RunningOperator, eventually

import opd
from opd.localcluster import LocalControlPlane
from opd.service import config as daemon_config
from opd.service.supervisor import Supervisor
from opd.webhooks import hosting

GROUP = "hooks.opd.dev"
GADGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": f"gadgets.{GROUP}"},
    "spec": {"group": GROUP, "scope": "Namespaced",
             "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
             "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                 "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]},
}
CONVERT_GROUP = "convert.opd.dev"


def _shape_schema(spec: dict[str, Any]) -> dict[str, Any]:
    return {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "properties": spec}}}}


SHAPE_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": f"shapes.{CONVERT_GROUP}"},
    "spec": {"group": CONVERT_GROUP, "scope": "Namespaced",
             "names": {"plural": "shapes", "singular": "shape", "kind": "Shape"},
             "versions": [
                 {"name": "v1", "served": True, "storage": True,
                  "schema": _shape_schema({"size": {"type": "integer"}})},
                 {"name": "v2", "served": True, "storage": False,
                  "schema": _shape_schema({"dimensions": {"type": "object", "properties": {
                      "size": {"type": "integer"}, "unit": {"type": "string"}}}})},
             ]},
}


class Raw:
    """Plain HTTPS to the API server, to see what a client sees: status, Warning headers, body."""

    def __init__(self, cp: LocalControlPlane) -> None:
        self.base = cp.server
        self.ssl = ssl.create_default_context(cafile=str(cp.ca_file))
        self.headers = {"Authorization": f"Bearer {cp.token}"}
        self.http = aiohttp.ClientSession()

    async def __call__(self, method: str, path: str, body: Any = None, *, query: dict[str, str] | None = None,
                       patch: bool = False) -> tuple[int, list[str], dict[str, Any]]:
        headers = {**self.headers, "Content-Type": "application/merge-patch+json" if patch else "application/json"}
        async with self.http.request(method, self.base + path, data=None if body is None else json.dumps(body),
                                     params=query, headers=headers, ssl=self.ssl) as response:
            return response.status, response.headers.getall("Warning", []), await response.json()


@pytest.fixture
async def raw(control_plane: LocalControlPlane) -> AsyncIterator[Raw]:
    client = Raw(control_plane)
    yield client
    await client.http.close()


@pytest.fixture(scope="session")
def gadgets(kubeconfig: Path) -> str:
    async def create() -> None:
        async with await make_api(kubeconfig) as api:
            await ensure_crd(api, GADGET_CRD)

    asyncio.run(create())
    return "gadgets"


def _gadget(name: str, spec: dict[str, Any], **labels: str) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/v1", "kind": "Gadget", "metadata": {"name": name, "labels": labels}, "spec": spec}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _delete_configurations(raw: Raw, name: str) -> None:
    for plural in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"):
        await raw("DELETE", f"/apis/admissionregistration.k8s.io/v1/{plural}/{name}")


async def test_admission_refuses_warns_mutates_and_sees_dry_runs(raw: Raw, namespace: str, gadgets: str,
                                                                 kubeconfig: Path) -> None:
    mark = uuid.uuid4().hex[:8]
    managed = f"t{mark}.{GROUP}"
    calls: list[dict[str, Any]] = []
    registry = opd.OperatorRegistry()
    path = f"/apis/{GROUP}/v1/namespaces/{namespace}/gadgets"

    @opd.on.startup(registry=registry)
    def configure(settings: opd.OperatorSettings, **_: Any) -> None:  # as Kopf's users do it
        settings.admission.server = opd.WebhookServer()
        settings.admission.managed = managed

    @opd.on.validate(gadgets, registry=registry, labels={"test": mark})
    def check(spec: Any, name: str, operation: str, dryrun: bool, userinfo: Any, headers: Any, warnings: list[str],
              **_: Any) -> None:
        calls.append({"name": name, "operation": operation, "dryrun": dryrun, "agent": headers.get("User-Agent")})
        warnings.append(f"checked by opd for {userinfo['username']}")
        if spec.get("field") == "wrong":
            raise opd.AdmissionError("field 'wrong' is not allowed", code=422)

    @opd.on.validate(gadgets, registry=registry, labels={"test": mark}, operation="UPDATE")
    def frozen(old: Any, **_: Any) -> None:
        if old["spec"].get("field") == "frozen":
            raise opd.AdmissionError("a frozen gadget stays as it is", code=409)

    @opd.on.validate(gadgets, registry=registry, operations=["DELETE"], labels={"protected": opd.PRESENT})
    def keep(body: Any, **_: Any) -> None:
        raise opd.AdmissionError(f"{body['metadata']['name']} is protected", code=403)

    @opd.on.mutate(gadgets, registry=registry, labels={"test": mark}, operation="CREATE")
    def inject(patch: opd.Patch, spec: Any, **_: Any) -> None:
        patch.spec["injected"] = 123
        patch.spec["drop"] = None
        patch.metadata.labels["mutated"] = "yes"

    @opd.on.validate(gadgets, registry=registry, labels={"slow": mark}, timeout=2)
    async def slow(**_: Any) -> None:
        await asyncio.sleep(5)

    @opd.on.validate(gadgets, registry=registry, labels={"never": mark}, persistent=True)
    def stays(**_: Any) -> None: ...

    try:
        login = opd.Login(kubeconfig=str(kubeconfig))
        async with RunningOperator(registry=registry, namespaces=[namespace], login=login):
            # The API server reads new configurations with a watch of its own: a moment after opd wrote them.
            async def live() -> bool:
                status, warnings, _ = await raw("POST", path, _gadget("probe", {}, test=mark), query={"dryRun": "All"})
                return status == 201 and "checked by opd for opd-admin" in " ".join(warnings)

            await eventually(live, timeout=20)

            status, warnings, answer = await raw("POST", path, _gadget("bad", {"field": "wrong"}, test=mark))
            assert status == 422
            assert "denied the request: field 'wrong' is not allowed" in answer["message"]
            assert f".t{mark}.{GROUP}" in answer["message"]  # the webhook's name: <handler>.<managed>

            status, warnings, stored = await raw("POST", path, _gadget("good", {"field": "ok", "drop": 1},
                                                                       test=mark, protected="yes"))
            assert status == 201, stored
            assert any("checked by opd for opd-admin" in w for w in warnings)  # Warning: 299 - "..."
            assert stored["spec"] == {"field": "ok", "injected": 123}
            assert stored["metadata"]["labels"]["mutated"] == "yes"
            _, _, again = await raw("GET", f"{path}/good")
            assert again["spec"] == {"field": "ok", "injected": 123}  # stored with the mutation

            status, _, dry = await raw("POST", path, _gadget("dry", {"field": "ok"}, test=mark),
                                       query={"dryRun": "All"})
            assert status == 201 and dry["spec"]["injected"] == 123
            assert {"name": "dry", "operation": "CREATE", "dryrun": True} in [
                {k: c[k] for k in ("name", "operation", "dryrun")} for c in calls]
            assert (await raw("GET", f"{path}/dry"))[0] == 404  # nothing stored
            assert all(c["agent"] and c["agent"].startswith("kube-apiserver") for c in calls)

            status, _, answer = await raw("POST", path, _gadget("ice", {"field": "frozen"}, test=mark))
            assert status == 201, answer  # only updates are checked for it
            status, _, answer = await raw("PATCH", f"{path}/ice", {"spec": {"field": "thawed"}}, patch=True)
            assert status == 409 and "a frozen gadget stays as it is" in answer["message"]
            status, _, answer = await raw("PATCH", f"{path}/good", {"spec": {"more": 1}}, patch=True)
            assert status == 200 and "injected" in answer["spec"] and "mutated" in answer["metadata"]["labels"]

            status, _, answer = await raw("DELETE", f"{path}/good")
            assert status == 403 and "good is protected" in answer["message"]
            status, _, answer = await raw("POST", path, _gadget("sleepy", {}, slow=mark))
            assert status == 500 and "validate handler 'slow' did not answer within 1s" in answer["message"]
            status, _, answer = await raw("POST", path, _gadget("unlabelled", {"field": "wrong"}))
            assert status == 201 and "injected" not in answer["spec"]  # the objectSelector: never sent to opd
            assert "unlabelled" not in [c["name"] for c in calls]

        # Stopped: its webhooks are taken out, but for the persistent one.
        status, _, validating = await raw("GET", f"/apis/admissionregistration.k8s.io/v1/"
                                                  f"validatingwebhookconfigurations/{managed}")
        assert status == 200 and [w["name"] for w in validating["webhooks"]] == [f"stays.{managed}"]
        status, _, _ = await raw("GET", f"/apis/admissionregistration.k8s.io/v1/"
                                        f"mutatingwebhookconfigurations/{managed}")
        assert status == 404  # nothing left in it: deleted
    finally:
        await _delete_configurations(raw, managed)


async def test_conversion_round_trip_through_the_api_server(raw: Raw, namespace: str, kubeconfig: Path) -> None:
    """Stored in v1, read in v2; written in v2, read in v1: each way by opd's converters."""
    async with await make_api(kubeconfig) as api:
        await ensure_crd(api, SHAPE_CRD)
    registry = opd.OperatorRegistry()
    steps: list[tuple[str, str]] = []
    settings = opd.OperatorSettings()
    settings.admission.server = opd.WebhookServer()

    @opd.on.convert(f"shapes.{CONVERT_GROUP}", from_version="v1", to_version="v2", registry=registry)
    def up(spec: Any, from_version: str, to_version: str, **_: Any) -> dict[str, Any]:
        steps.append((from_version, to_version))
        return {"spec": {"dimensions": {"size": spec["size"], "unit": "cm"}}}

    @opd.on.convert(f"shapes.{CONVERT_GROUP}", from_version="v2", to_version="v1", registry=registry)
    def down(body: dict[str, Any], **_: Any) -> None:
        steps.append(("v2", "v1"))
        body["spec"] = {"size": body["spec"]["dimensions"]["size"]}  # in place

    v1, v2 = (f"/apis/{CONVERT_GROUP}/{v}/namespaces/{namespace}/shapes" for v in ("v1", "v2"))
    crd_path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/shapes.{CONVERT_GROUP}"
    try:
        async with RunningOperator(registry=registry, settings=settings, namespaces=[namespace],
                                   login=opd.Login(kubeconfig=str(kubeconfig))):
            _, _, crd = await raw("GET", crd_path)
            conversion = crd["spec"]["conversion"]
            assert conversion["strategy"] == "Webhook"
            assert conversion["webhook"]["clientConfig"]["url"].endswith(f"/convert/shapes.{CONVERT_GROUP}")
            assert conversion["webhook"]["conversionReviewVersions"] == ["v1"]

            status, _, made = await raw("POST", v1, {"apiVersion": f"{CONVERT_GROUP}/v1", "kind": "Shape",
                                                     "metadata": {"name": "a", "labels": {"l": "1"}},
                                                     "spec": {"size": 3}})
            assert status == 201, made

            async def read_v2() -> dict[str, Any] | None:
                status, _, found = await raw("GET", f"{v2}/a")  # until the API server uses the new stanza
                return found if status == 200 and "dimensions" in found.get("spec", {}) else None

            found = await eventually(read_v2, timeout=20)
            assert found["apiVersion"] == f"{CONVERT_GROUP}/v2"
            assert found["spec"] == {"dimensions": {"size": 3, "unit": "cm"}}
            assert found["metadata"]["labels"] == {"l": "1"} and found["metadata"]["uid"] == made["metadata"]["uid"]

            status, _, written = await raw("POST", v2, {"apiVersion": f"{CONVERT_GROUP}/v2", "kind": "Shape",
                                                        "metadata": {"name": "b"},
                                                        "spec": {"dimensions": {"size": 5}}})
            assert status == 201, written
            status, _, back = await raw("GET", f"{v1}/b")
            assert status == 200 and back["spec"] == {"size": 5}  # stored as v1: converted down on write

            status, _, patched = await raw("PATCH", f"{v2}/a", {"spec": {"dimensions": {"size": 7}}}, patch=True)
            assert status == 200 and patched["spec"]["dimensions"]["size"] == 7
            status, _, back = await raw("GET", f"{v1}/a")
            assert back["spec"] == {"size": 7}
            assert ("v1", "v2") in steps and ("v2", "v1") in steps
    finally:
        await raw("PATCH", crd_path, {"spec": {"conversion": {"strategy": "None", "webhook": None}}}, patch=True)
        await raw("DELETE", crd_path)


async def test_managed_webhooks_leave_out_the_excluded_namespaces(raw: Raw, namespace: str, gadgets: str,
                                                                  kubeconfig: Path) -> None:
    """kube-system and the namespaces configured are left out by the configurations' namespaceSelector
    (on kubernetes.io/metadata.name: API servers before 1.21, as the one of these tests, do not set
    that label; it is set here as 1.21+ does, and without it nothing is left out)."""
    mark = uuid.uuid4().hex[:8]
    managed = f"x{mark}.{GROUP}"
    excluded = f"{namespace[:50]}-x"
    registry = opd.OperatorRegistry()
    settings = opd.OperatorSettings()
    settings.admission.server = opd.WebhookServer()
    settings.admission.managed = managed
    settings.admission.excluded_namespaces = ["kube-system", excluded]

    @opd.on.validate(gadgets, registry=registry, labels={"test": mark})
    def refuse(**_: Any) -> None:
        raise opd.AdmissionError("refused wherever opd is called", code=403)

    assert (await raw("POST", "/api/v1/namespaces", {"metadata": {"name": excluded}}))[0] == 201
    labels = "kubernetes.io/metadata.name"
    set_by_server = []
    for ns in (namespace, excluded):
        _, _, found = await raw("GET", f"/api/v1/namespaces/{ns}")
        set_by_server.append(labels in (found["metadata"].get("labels") or {}))
        status, _, _ = await raw("PATCH", f"/api/v1/namespaces/{ns}", {"metadata": {"labels": {labels: ns}}},
                                 patch=True)
        assert status == 200
    print(f"\nkubernetes.io/metadata.name set by this API server on new namespaces: {all(set_by_server)}")
    covered, left_out = (f"/apis/{GROUP}/v1/namespaces/{ns}/gadgets" for ns in (namespace, excluded))
    try:
        async with RunningOperator(registry=registry, settings=settings, namespaces=[namespace],
                                   login=opd.Login(kubeconfig=str(kubeconfig))):
            _, _, validating = await raw("GET", f"/apis/admissionregistration.k8s.io/v1/"
                                                f"validatingwebhookconfigurations/{managed}")
            assert [w["namespaceSelector"] for w in validating["webhooks"]] == [{"matchExpressions": [
                {"key": labels, "operator": "NotIn", "values": sorted(["kube-system", excluded])}]}]

            async def live() -> bool:
                status, _, _ = await raw("POST", covered, _gadget("probe", {}, test=mark), query={"dryRun": "All"})
                return status == 403

            await eventually(live, timeout=20)
            status, _, answer = await raw("POST", covered, _gadget("a", {}, test=mark))
            assert status == 403 and "refused wherever opd is called" in answer["message"]
            status, _, answer = await raw("POST", left_out, _gadget("a", {}, test=mark))
            assert status == 201, answer  # never sent to opd
    finally:
        await _delete_configurations(raw, managed)
        await raw("DELETE", f"/api/v1/namespaces/{excluded}")


# -- opd start: two plugins, one server --------------------------------------------------------------------------------

MARK = uuid.uuid4().hex[:8]


class Guard:
    """Refuses gadgets whose field is 'wrong' (a plugin in the daemon's loop)."""

    @opd.hookimpl
    def opd_register(self, registry: opd.OperatorRegistry) -> None:
        @opd.on.validate("gadgets", registry=registry, labels={"test": MARK})
        def check(spec: Any, **_: Any) -> None:
            if spec.get("field") == "wrong":
                raise opd.AdmissionError("the guard plugin says no", code=422)


class Stamp:
    """Stamps every gadget (a plugin in a thread and loop of its own); sets a server of its own in
    a startup handler, as a Kopf operator does (the daemon's is used instead)."""

    @opd.hookimpl
    def opd_register(self, registry: opd.OperatorRegistry) -> None:
        @opd.on.startup(registry=registry)
        def configure(settings: opd.OperatorSettings, **_: Any) -> None:
            settings.admission.server = opd.WebhookServer(port=1)  # would fail to listen, were it used

        @opd.on.mutate("gadgets", registry=registry, labels={"test": MARK})
        def stamp(patch: opd.Patch, **_: Any) -> None:
            patch.spec["stamped"] = "by the stamp plugin"


guard, stamp = Guard(), Stamp()


async def test_two_plugins_share_one_webhook_server(tmp_path: Path, kubeconfig: Path, namespace: str, gadgets: str,
                                                    raw: Raw) -> None:
    port = _free_port()
    managed = f"d{MARK}.{GROUP}"
    (tmp_path / "opd.toml").write_text(f"""
[opd]
namespaces = ["{namespace}"]
shutdown_timeout = 3
[kubernetes]
kubeconfig = "{kubeconfig}"
[webhooks]
listen = "127.0.0.1:{port}"
cert_dir = "certs"
managed = "{managed}"
excluded_namespaces = ["kube-system", "infra"]
[plugins.stamp]
isolation = "thread"
""")
    config = daemon_config.load(tmp_path / "opd.toml")
    eps = [metadata.EntryPoint(name, f"{__name__}:{name}", "opd.plugins") for name in ("guard", "stamp")]
    supervisor = Supervisor(config, env={}, entry_points=eps)
    stop = asyncio.Event()
    task = asyncio.create_task(supervisor.run(stop))
    base = "/apis/admissionregistration.k8s.io/v1"
    path = f"/apis/{GROUP}/v1/namespaces/{namespace}/gadgets"
    try:
        await eventually(lambda: supervisor.ready(), timeout=30)
        assert supervisor.webhook_server.loop is asyncio.get_running_loop()  # the daemon's, not a plugin's thread's
        _, _, validating = await raw("GET", f"{base}/validatingwebhookconfigurations/{managed}")
        _, _, mutating = await raw("GET", f"{base}/mutatingwebhookconfigurations/{managed}")
        assert [w["name"] for w in validating["webhooks"]] == [f"check.guard.{managed}"]
        assert [w["name"] for w in mutating["webhooks"]] == [f"stamp.stamp.{managed}"]
        for webhook in (*validating["webhooks"], *mutating["webhooks"]):  # the daemon's [webhooks] excluded_namespaces
            assert webhook["namespaceSelector"]["matchExpressions"] == [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["infra", "kube-system"]}]
        urls = [validating["webhooks"][0]["clientConfig"]["url"], mutating["webhooks"][0]["clientConfig"]["url"]]
        assert urls == [f"https://127.0.0.1:{port}/guard/validate/check", f"https://127.0.0.1:{port}/stamp/mutate/stamp"]
        assert (validating["webhooks"][0]["clientConfig"]["caBundle"]
                == mutating["webhooks"][0]["clientConfig"]["caBundle"])  # one certificate
        assert (tmp_path / "certs" / "tls.crt").exists()

        async def refused() -> bool:
            status, _, _ = await raw("POST", path, _gadget("wrong", {"field": "wrong"}, test=MARK),
                                     query={"dryRun": "All"})
            return status == 422

        await eventually(refused, timeout=20)
        async def stamped() -> dict[str, Any] | None:
            status, _, made = await raw("POST", path, _gadget("ok", {"field": "ok"}, test=MARK),
                                        query={"dryRun": "All"})
            return made if status == 201 and "stamped" in made["spec"] else None

        await eventually(stamped, timeout=20)
        status, _, made = await raw("POST", path, _gadget("ok", {"field": "ok"}, test=MARK))
        assert status == 201 and made["spec"] == {"field": "ok", "stamped": "by the stamp plugin"}
        status, _, answer = await raw("POST", path, _gadget("wrong", {"field": "wrong"}, test=MARK))
        assert status == 422 and "the guard plugin says no" in answer["message"]
        stop.set()
        await asyncio.wait_for(task, 30)
        for plural in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"):
            status, _, _ = await raw("GET", f"{base}/{plural}/{managed}")
            assert status == 404, f"{plural} {managed} left behind"  # both emptied at stop: deleted
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)
        await _delete_configurations(raw, managed)


async def test_a_threaded_plugin_starts_the_shared_server_in_the_daemons_loop(
        tmp_path: Path, kubeconfig: Path, namespace: str, gadgets: str, raw: Raw) -> None:
    """The server outlives the plugin that happened to start it: it is restarted, the server stays."""
    port = _free_port()
    managed = f"s{MARK}.{GROUP}"
    (tmp_path / "opd.toml").write_text(f"""
[opd]
namespaces = ["{namespace}"]
shutdown_timeout = 3
[kubernetes]
kubeconfig = "{kubeconfig}"
[webhooks]
listen = "127.0.0.1:{port}"
managed = "{managed}"
[plugins]
enable = ["stamp"]
[plugins.stamp]
isolation = "thread"
""")
    eps = [metadata.EntryPoint("stamp", f"{__name__}:stamp", "opd.plugins")]
    supervisor = Supervisor(daemon_config.load(tmp_path / "opd.toml"), env={}, entry_points=eps)
    stop = asyncio.Event()
    task = asyncio.create_task(supervisor.run(stop))
    try:
        await eventually(lambda: supervisor.ready(), timeout=30)
        server = supervisor.webhook_server
        assert server.started and server.loop is asyncio.get_running_loop()
        await supervisor.runners["stamp"].stop()  # its thread and loop end
        assert server.started and server.loop is asyncio.get_running_loop()
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await _delete_configurations(raw, managed)
    assert not supervisor.webhook_server.started


async def test_a_kopf_style_admission_operator(raw: Raw, namespace: str, gadgets: str, kubeconfig: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Written as Kopf documents admission (its 17-admission example's behaviours), with
    ``import opd as kopf``: an auto-server, headers and sslpeer, a dry-run exception, a field
    filter with a custom code, a label-filtered mutation. A configuration deleted by hand comes back."""
    import opd as kopf

    monkeypatch.setattr(hosting, "RECONCILE_INTERVAL", 0.5)  # a minute, normally

    mark = uuid.uuid4().hex[:8]
    managed = f"k{mark}.{GROUP}"
    registry = kopf.OperatorRegistry()
    path = f"/apis/{GROUP}/v1/namespaces/{namespace}/gadgets"
    servers: list[Any] = []

    @kopf.on.startup(registry=registry)
    def config(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.admission.server = kopf.WebhookAutoServer()
        settings.admission.managed = managed
        servers.append(settings.admission.server)

    @kopf.on.validate("gadgets", registry=registry)
    def authhook(headers: kopf.Headers, sslpeer: kopf.SSLPeer, warnings: list[str], **_: Any) -> None:
        warnings.append(f"user agent: {headers.get('User-Agent', '(unidentified)').split('/')[0]}")
        if not sslpeer.get("subject"):
            warnings.append("no client certificate")

    @kopf.on.validate("gadgets", registry=registry)
    def validate1(spec: kopf.Spec, dryrun: bool, **_: Any) -> None:
        if not dryrun and spec.get("field") == "wrong":
            raise kopf.AdmissionError("not with a wrong field")

    @kopf.on.validate("gadgets", field="spec.field", value="not-allowed", registry=registry)
    def validate2(**_: Any) -> None:
        raise kopf.AdmissionError("never this value", code=555)

    @kopf.on.mutate("gadgets", labels={"somelabel": "somevalue"}, registry=registry)
    def mutate1(patch: kopf.Patch, **_: Any) -> None:
        patch.spec["injected"] = 123

    seen: list[tuple[bool, str, bool]] = []

    @kopf.on.validate("gadgets", labels={"somelabel": "somevalue"}, registry=registry)
    def views(body: kopf.Body, meta: kopf.Meta, spec: kopf.Spec, logger: kopf.Logger, **_: Any) -> None:
        # As resource handlers: Kopf's views, and a stdlib logger that formats %-arguments.
        logger.info("admitting %s", meta.name)
        seen.append((isinstance(body, kopf.Body) and isinstance(spec, kopf.Spec), body.metadata.name,
                     isinstance(logger, logging.LoggerAdapter)))

    try:
        async with RunningOperator(registry=registry, namespaces=[namespace],
                                   login=kopf.Login(kubeconfig=str(kubeconfig))):
            assert servers[0].base_url.startswith("https://127.0.0.1:")  # detected: a local cluster

            async def refused() -> dict[str, Any] | None:
                status, _, answer = await raw("POST", path, _gadget("wrong", {"field": "wrong"}))
                return answer if status == 500 else None

            answer = await eventually(refused, timeout=20)
            assert "not with a wrong field" in answer["message"]
            status, warnings, _ = await raw("POST", path, _gadget("wrong", {"field": "wrong"}),
                                            query={"dryRun": "All"})
            assert status == 201 and any("user agent: kube-apiserver" in w for w in warnings)
            assert any("no client certificate" in w for w in warnings)
            status, _, answer = await raw("POST", path, _gadget("never", {"field": "not-allowed"}))
            assert status == 555 and "never this value" in answer["message"]
            status, _, made = await raw("POST", path, _gadget("marked", {}, somelabel="somevalue"))
            assert status == 201 and made["spec"] == {"injected": 123}
            assert (True, "marked", True) in seen
            status, _, made = await raw("POST", path, _gadget("plain", {}))
            assert status == 201 and made["spec"] == {}

            where = f"/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/{managed}"
            assert (await raw("DELETE", where))[0] == 200

            async def back() -> bool:
                status, _, found = await raw("GET", where)
                return status == 200 and len(found["webhooks"]) == 4

            await eventually(back, timeout=10)
    finally:
        await _delete_configurations(raw, managed)
