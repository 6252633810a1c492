"""Webhooks without a cluster: certificates, review shapes, JSON patches, converter chains, the
configurations' entries, the decorators' options, the [webhooks] section."""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import json
import re
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509

import opd
from opd.errors import ConfigError, WebhookError
from opd.registry import Reason, WebhookHandler
from opd.resources import Resource, ResourceRef
from opd.service import config, rendering
from opd.webhooks import admission, certificates, conversion, management
from opd.webhooks.server import WebhookServer, with_path

REPO = Path(__file__).resolve().parents[2]
GADGETS = Resource(group="hooks.opd.dev", version="v1", plural="gadgets", kind="Gadget", namespaced=True)


# -- certificates ----------------------------------------------------------------------------------------------------


def test_serving_certificate_names_every_host_and_chains_to_its_ca() -> None:
    made = certificates.make(["localhost", "127.0.0.1", "::1", "Host.Example"])
    dns, ips = certificates.subject_names(made.cert)
    assert dns == {"localhost", "host.example"}
    assert ips == {"127.0.0.1", "::1"}
    assert certificates.covers(made.cert, ["localhost", "[::1]", "127.0.0.1"])
    assert not certificates.covers(made.cert, ["127.0.0.2"])
    assert not certificates.covers(made.cert, ["other.example"])
    assert certificates.signed_by(made.cert, made.ca)
    assert not certificates.signed_by(made.cert, certificates.make(["localhost"]).ca)
    cert, ca = x509.load_pem_x509_certificate(made.cert), x509.load_pem_x509_certificate(made.ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in cert.extensions.get_extension_for_class(
        x509.ExtendedKeyUsage).value
    now = datetime.datetime.now(datetime.UTC)
    assert cert.not_valid_before_utc <= now  # with room for clocks behind ours
    assert datetime.timedelta(days=364) < cert.not_valid_after_utc - now <= datetime.timedelta(days=365)
    assert datetime.timedelta(days=3649) < ca.not_valid_after_utc - now <= datetime.timedelta(days=3650)
    assert certificates.lasts(made.cert)
    assert not certificates.lasts(made.cert, datetime.timedelta(days=400))
    with pytest.raises(ConfigError):
        certificates.new_serving(made.ca, made.ca_key or b"", [])


def test_python_ssl_verifies_the_certificate_with_the_ca_only_for_its_names(tmp_path: Path) -> None:
    """OpenSSL 3 (this machine's) takes the CA and checks the names as the API server does."""
    made = certificates.make(["127.0.0.1", "localhost"])
    (tmp_path / "ca.crt").write_bytes(made.ca)
    (tmp_path / "tls.crt").write_bytes(made.cert)
    (tmp_path / "tls.key").write_bytes(made.key)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    client = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname

    def handshake(hostname: str) -> None:
        c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
        c = client.wrap_bio(c_in, c_out, server_hostname=hostname)
        s = server.wrap_bio(s_in, s_out, server_side=True)
        for _ in range(10):
            for side, out, into in ((c, c_out, s_in), (s, s_out, c_in)):
                with contextlib.suppress(ssl.SSLWantReadError):
                    side.do_handshake()
                into.write(out.read())
        assert c.getpeercert() is not None  # complete: verified

    handshake("127.0.0.1")
    handshake("localhost")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake("example.com")


def test_kept_certificates_are_reused_renewed_for_new_names_and_provided_ones_left_alone(tmp_path: Path) -> None:
    first, done = certificates.keep(tmp_path / "certs", ["127.0.0.1"])
    assert done == "made"
    assert {p.name for p in (tmp_path / "certs").iterdir()} == {"ca.crt", "ca.key", "tls.crt", "tls.key"}
    assert all((p.stat().st_mode & 0o777) == 0o600 for p in (tmp_path / "certs").iterdir())
    assert ((tmp_path / "certs").stat().st_mode & 0o777) == 0o700
    again, done = certificates.keep(tmp_path / "certs", ["127.0.0.1"])
    assert (done, again) == ("kept", first)
    renewed, done = certificates.keep(tmp_path / "certs", ["127.0.0.1", "opd.example"])
    assert done == "renewed"
    assert renewed.ca == first.ca and renewed.cert != first.cert  # the caBundle stays: only the leaf is new
    assert certificates.covers(renewed.cert, ["opd.example"])
    provided = tmp_path / "provided"
    provided.mkdir()
    other = certificates.make(["elsewhere"])
    (provided / "tls.crt").write_bytes(other.cert)
    (provided / "tls.key").write_bytes(other.key)
    (provided / "ca.crt").write_bytes(other.ca)
    used, done = certificates.keep(provided, ["127.0.0.1"])  # they do not name it: not ours to change
    assert done == "provided" and used.cert == other.cert and used.ca == other.ca and used.ca_key is None
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "ca.crt").write_text("not a certificate")
    (tmp_path / "bad" / "ca.key").write_text("nor a key")
    with pytest.raises(ConfigError, match="cannot use them"):
        certificates.keep(tmp_path / "bad", ["127.0.0.1"])


async def test_the_server_answers_over_tls_to_a_client_that_trusts_its_ca(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []

    async def fn(review: Any, *, webhook: str | None = None, headers: Any = None, sslpeer: Any = None) -> Any:
        seen.append({"webhook": webhook, "agent": (headers or {}).get("User-Agent"), "peer": sslpeer})
        if webhook == "bad":
            raise WebhookError("not for me")
        return {"echo": review}

    server = WebhookServer(port=None, cadump=tmp_path / "ca.pem")
    configs = server(fn)
    config_ = await anext(configs)
    try:
        assert re.fullmatch(r"https://127\.0\.0\.1:\d+", config_["url"])
        assert base64.b64decode(config_["caBundle"]) == (tmp_path / "ca.pem").read_bytes()
        trusted = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{config_['url']}/validate/x%2Fy", json={"a": 1}, ssl=trusted,
                                 headers={"User-Agent": "test"}) as response:
                assert response.status == 200 and await response.json() == {"echo": {"a": 1}}
            async with http.post(f"{config_['url']}/bad", json={}, ssl=trusted) as response:
                assert response.status == 400 and "not for me" in await response.text()
            async with http.post(f"{config_['url']}/x", data=b"{not json", ssl=trusted) as response:
                assert response.status == 400
            async with http.get(f"{config_['url']}/x", ssl=trusted) as response:
                assert response.status == 405
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with http.post(config_["url"], json={}, ssl=ssl.create_default_context()):
                    pass  # the system's CAs do not know ours
        assert seen[0] == {"webhook": "validate/x/y", "agent": "test", "peer": {}}
    finally:
        await configs.aclose()  # type: ignore[attr-defined]
    assert not server.started
    assert server._tmp is None  # the per-process key is gone with the server


def test_client_configs_get_the_handler_path_appended() -> None:
    assert with_path({"url": "https://h:1/base/", "caBundle": "x"}, "validate/a b") == {
        "url": "https://h:1/base/validate/a%20b", "caBundle": "x"}
    assert with_path({"service": {"namespace": "n", "name": "s", "port": 443, "path": "/p"}}, "convert/c.d") == {
        "service": {"namespace": "n", "name": "s", "port": 443, "path": "/p/convert/c.d"}}
    server = WebhookServer(service="ns/svc:8443", addr="0.0.0.0", port=9443)
    assert server.hosts()[:4] == ["svc.ns.svc", "svc.ns.svc.cluster.local", "svc.ns", "svc"]
    assert server.client_config("p")["service"] == {"namespace": "ns", "name": "svc", "port": 8443, "path": "/p"}
    assert WebhookServer(addr="0.0.0.0", port=1).base_url == "https://localhost:1"
    assert opd.WebhookK3dServer(port=1).base_url == "https://host.k3d.internal:1"
    assert "host.minikube.internal" in opd.WebhookMinikubeServer(port=1).hosts()
    docker = opd.WebhookDockerDesktopServer(port=1)  # Kopf's name (its example 17 uses it)
    assert (docker.listen_addr, docker.base_url) == ("0.0.0.0", "https://host.docker.internal:1")
    assert WebhookServer(addr="::1", port=2).base_url == "https://[::1]:2"
    with pytest.raises(ConfigError, match="namespace/name"):
        WebhookServer(service="nope")
    with pytest.raises(ConfigError, match="no query"):
        WebhookServer(url="https://x/?a=b")
    with pytest.raises(ConfigError, match="not part of opd"):
        opd.WebhookNgrokTunnel(token="t")(lambda *a, **k: None)  # type: ignore[arg-type]


# -- admission reviews -----------------------------------------------------------------------------------------------


def _review(operation: str = "CREATE", obj: Any = None, old: Any = None, **request: Any) -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u-1", "kind": {"group": "hooks.opd.dev", "version": "v1", "kind": "Gadget"},
        "resource": {"group": "hooks.opd.dev", "version": "v1", "resource": "gadgets"},
        "operation": operation, "namespace": "ns", "name": "g", "userInfo": {"username": "me"},
        "object": obj, "oldObject": old, "dryRun": False, **request}}


def _handler(fn: Any, reason: Reason = Reason.VALIDATE, **options: Any) -> WebhookHandler:
    return WebhookHandler(fn=fn, id=options.pop("id", fn.__name__), reason=reason,
                          resource=ResourceRef.parse("gadgets"), **options)


async def _run(handler: WebhookHandler, kwargs: dict[str, Any]) -> Any:
    return handler.fn(**kwargs)


async def test_admission_answers_refusals_warnings_and_patches_in_the_api_servers_shape() -> None:
    def warn(warnings: list[str], **_: Any) -> None:
        warnings.append("careful:\n  twice")

    def refuse(spec: dict[str, Any], **_: Any) -> None:
        if spec.get("field") == "wrong":
            raise opd.AdmissionError("field is wrong", code=422)

    def crash(**_: Any) -> None:
        raise RuntimeError("oops")

    def inject(patch: opd.Patch, **_: Any) -> None:
        patch.spec["injected"] = {"a": 1, "b": None}
        patch.spec["gone"] = None
        patch.metadata.labels["x/y~z"] = "1"

    body = {"metadata": {"name": "g"}, "spec": {"field": "ok", "gone": 1, "kept": 2}}
    review = _review(obj=body)
    request = admission.read(review)
    handlers = [_handler(warn), _handler(refuse), _handler(inject, Reason.MUTATE)]
    kwargs = admission.kwargs_for(request, headers={"H": "v"}, sslpeer=None, warnings=[], patch=opd.Patch())
    answer = await admission.answer(review, request, handlers, kwargs, _run)
    response = answer["response"]
    assert (answer["apiVersion"], answer["kind"]) == ("admission.k8s.io/v1", "AdmissionReview")
    assert response["uid"] == "u-1" and response["allowed"] is True
    assert response["warnings"] == ["careful: twice"]
    assert response["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(response["patch"])) == [
        {"op": "add", "path": "/spec/injected", "value": {"a": 1}},
        {"op": "remove", "path": "/spec/gone"},
        {"op": "add", "path": "/metadata/labels", "value": {"x/y~z": "1"}},
    ]
    wrong = {**_review(obj={"spec": {"field": "wrong"}}), "apiVersion": "admission.k8s.io/v1beta1"}
    request = admission.read(wrong)
    kwargs = admission.kwargs_for(request, headers={}, sslpeer={}, warnings=[], patch=opd.Patch())
    answer = await admission.answer(wrong, request, [_handler(crash), _handler(refuse), _handler(warn)], kwargs, _run)
    assert answer["apiVersion"] == "admission.k8s.io/v1beta1"
    assert answer["response"] == {"uid": "u-1", "allowed": False, "warnings": ["careful: twice"],
                                  "status": {"code": 422, "message": "field is wrong"}}  # the deliberate one wins
    request = admission.read(_review(obj={}))
    kwargs = admission.kwargs_for(request, headers={}, sslpeer={}, warnings=[], patch=opd.Patch())
    answer = await admission.answer(_review(obj={}), request, [_handler(crash)], kwargs, _run)
    assert answer["response"]["status"] == {"code": 500, "message": "oops"}
    with pytest.raises(WebhookError):
        admission.read({"kind": "AdmissionReview"})


def test_the_json_patch_does_what_the_merge_patch_says() -> None:
    original = {"a": {"b": 1, "c": [1]}, "s": "text", "k~/": 0}
    assert admission.json_patch(original, {"a": {"b": None, "c": [2], "d": {"e": None, "f": 1}},
                                           "s": {"x": 1}, "k~/": None, "new": None}) == [
        {"op": "remove", "path": "/a/b"},
        {"op": "replace", "path": "/a/c", "value": [2]},
        {"op": "add", "path": "/a/d", "value": {"f": 1}},
        {"op": "replace", "path": "/s", "value": {"x": 1}},
        {"op": "remove", "path": "/k~0~1"},
    ]
    with pytest.raises(TypeError):
        admission.json_patch({}, {"a": {1, 2}})
    with pytest.raises(ValueError, match="JSON"):
        admission.json_patch({}, {"a": float("nan")})


def test_which_handlers_a_request_is_for() -> None:
    def fn(**_: Any) -> None: ...

    create = admission.read(_review("CREATE", obj={}))
    status = admission.read(_review("UPDATE", obj={}, subResource="status"))
    other = admission.read({**_review(obj={}), "request": {**_review(obj={})["request"], "resource": {
        "group": "other.dev", "version": "v1", "resource": "gadgets"}}})
    plain, updates = _handler(fn), _handler(fn, operations=frozenset({"UPDATE"}))
    on_status, any_sub = _handler(fn, subresource="status"), _handler(fn, subresource="*")
    assert admission.applies(plain, create, GADGETS) and not admission.applies(plain, status, GADGETS)
    assert not admission.applies(updates, create, GADGETS) and not admission.applies(updates, status, GADGETS)
    assert admission.applies(on_status, status, GADGETS) and admission.applies(any_sub, status, GADGETS)
    assert not admission.applies(on_status, create, GADGETS)
    assert not admission.applies(plain, other, GADGETS)
    assert admission.applies(plain, other, None)  # not resolved yet: by its name only


# -- conversion reviews ----------------------------------------------------------------------------------------------


def _converter(source: str, target: str, fn: Any = None) -> WebhookHandler:
    def step(body: dict[str, Any], **_: Any) -> Any:
        body.setdefault("spec", {}).setdefault("path", []).append(f"{source}->{target}")
        return None

    return WebhookHandler(fn=fn or step, id=f"{source}-{target}", reason=Reason.CONVERT,
                          resource=ResourceRef.parse("gadgets"), from_version=source, to_version=target)


async def _convert_run(handler: WebhookHandler, body: dict[str, Any]) -> Any:
    return handler.fn(body=body)


def test_converters_chain_by_the_shortest_way() -> None:
    steps = [_converter("v1", "v2"), _converter("v2", "v3"), _converter("v3", "v1"), _converter("v2", "v1"),
             _converter("v1", "v3")]
    assert conversion.chain(steps, "v1", "v1") == []
    assert [s.id for s in conversion.chain(steps, "v1", "v3") or []] == ["v1-v3"]
    assert [s.id for s in conversion.chain(steps[:2], "v1", "v3") or []] == ["v1-v2", "v2-v3"]
    assert [s.id for s in conversion.chain(steps, "v3", "v2") or []] == ["v3-v1", "v1-v2"]
    assert conversion.chain(steps[:2], "v3", "v1") is None


async def test_conversion_answers_in_the_api_servers_shape_and_keeps_metadata() -> None:
    def rename(body: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {"spec": {"size": body["spec"]["old"]}, "metadata": {"name": "changed!", "labels": {"l": "2"}}}

    obj = {"apiVersion": "hooks.opd.dev/v1", "kind": "Gadget",
           "metadata": {"name": "g", "uid": "u", "labels": {"l": "1"}, "annotations": {"a": "1"}},
           "spec": {"old": 3}}
    same = {**obj, "apiVersion": "hooks.opd.dev/v2"}
    review = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
              "request": {"uid": "c-1", "desiredAPIVersion": "hooks.opd.dev/v2", "objects": [obj, same]}}
    answer = await conversion.answer(review, [_converter("v1", "v2", rename)], _convert_run)
    assert answer["apiVersion"] == "apiextensions.k8s.io/v1" and answer["kind"] == "ConversionReview"
    assert answer["response"]["uid"] == "c-1" and answer["response"]["result"] == {"status": "Success"}
    converted, untouched = answer["response"]["convertedObjects"]
    assert converted == {"apiVersion": "hooks.opd.dev/v2", "kind": "Gadget", "spec": {"size": 3},
                         "metadata": {"name": "g", "uid": "u", "labels": {"l": "2"}, "annotations": {"a": "1"}}}
    assert untouched == same
    elsewhere = {**review, "request": {"uid": "c-1", "desiredAPIVersion": "hooks.opd.dev/v9", "objects": [obj]}}
    failing = await conversion.answer(elsewhere, [_converter("v1", "v2", rename)], _convert_run)
    assert failing["response"]["result"]["status"] == "Failure"
    assert "no converter from v1 to v9" in failing["response"]["result"]["message"]
    assert "convertedObjects" not in failing["response"]

    def broken(**_: Any) -> Any:
        return ["not", "an", "object"]

    failing = await conversion.answer(review, [_converter("v1", "v2", broken)], _convert_run)
    assert "returned list, not the object" in failing["response"]["result"]["message"]
    with pytest.raises(WebhookError):
        conversion.read({"kind": "ConversionReview", "request": {"uid": "x"}})


# -- the configurations ----------------------------------------------------------------------------------------------


def test_webhook_entries_name_rules_selectors_and_paths() -> None:
    def fn(**_: Any) -> None: ...

    handlers = [
        (_handler(fn, id="check_it", labels={"app": "x", "on": opd.PRESENT, "off": opd.ABSENT, "f": lambda v: True},
                  operations=frozenset({"UPDATE", "CREATE"}), side_effects=True, ignore_failures=True,
                  timeout=3.0), GADGETS),
        (_handler(fn, id="plain", subresource="status", persistent=True), GADGETS),
        (_handler(fn, id="plain"), GADGETS),
    ]
    client_config = {"url": "https://127.0.0.1:9443/p", "caBundle": "Q0E="}
    made = management.entries(handlers, scope="a.opd.dev", client_config=client_config)
    assert [e["name"] for e in made] == [f"check-it-{management.dns_label('check_it')[-6:]}.a.opd.dev",
                                         "plain.a.opd.dev", f"{management.dns_label('plain-2')}.a.opd.dev"]
    first = made[0]
    assert first["clientConfig"] == {"url": "https://127.0.0.1:9443/p/validate/check_it", "caBundle": "Q0E="}
    assert first["rules"] == [{"apiGroups": ["hooks.opd.dev"], "apiVersions": ["v1"], "resources": ["gadgets"],
                               "operations": ["CREATE", "UPDATE"], "scope": "*"}]
    assert first["objectSelector"] == {"matchExpressions": [
        {"key": "app", "operator": "In", "values": ["x"]}, {"key": "on", "operator": "Exists"},
        {"key": "off", "operator": "DoesNotExist"}]}  # the callable is checked by opd, not the API server
    assert (first["sideEffects"], first["failurePolicy"], first["timeoutSeconds"]) == ("NoneOnDryRun", "Ignore", 3)
    assert made[1]["rules"][0]["resources"] == ["gadgets/status"] and made[1]["rules"][0]["operations"] == ["*"]
    assert (made[1]["sideEffects"], made[1]["failurePolicy"], made[1]["timeoutSeconds"]) == ("None", "Fail", 10)
    persistent = management.entries(handlers, scope="a.opd.dev", client_config=client_config, persistent_only=True)
    assert [e["name"] for e in persistent] == ["plain.a.opd.dev"]
    assert management.owned("plain.a.opd.dev", "a.opd.dev")
    assert not management.owned("plain.b.a.opd.dev", "a.opd.dev")  # another plugin's in a shared configuration
    assert not management.owned("plain.opd.dev", "a.opd.dev")
    assert management.check_name("auto.opd.dev") == "auto.opd.dev"
    for bad in ("nodots", "Upper.case", "x..y"):
        with pytest.raises(ConfigError):
            management.check_name(bad)
    stanza = management.conversion_stanza({"url": "https://h:1", "caBundle": "Q0E="}, "gadgets.hooks.opd.dev")
    assert stanza == {"strategy": "Webhook", "webhook": {"conversionReviewVersions": ["v1"], "clientConfig": {
        "url": "https://h:1/convert/gadgets.hooks.opd.dev", "service": None, "caBundle": "Q0E="}}}


# -- decorators and the registry -------------------------------------------------------------------------------------


def test_decorators_register_webhooks_apart_from_the_engines_handlers() -> None:
    registry = opd.OperatorRegistry()

    @opd.on.validate("gadgets", operation="create", operations=["DELETE"], registry=registry, persistent=True)
    def check(**_: Any) -> None: ...

    @opd.on.mutate("hooks.opd.dev/v1/gadgets", subresource="status", registry=registry, labels={"a": "b"})
    def change(**_: Any) -> None: ...

    @opd.on.convert("gadgets.hooks.opd.dev", from_version="hooks.opd.dev/v1", to_version="v2", registry=registry)
    @opd.on.convert("gadgets.hooks.opd.dev", from_version="v2", to_version="v1", registry=registry)
    def both(**_: Any) -> None: ...

    @opd.on.create("gadgets", registry=registry)
    def created(**_: Any) -> None: ...

    validate, mutate, up, down = registry.webhooks()
    assert (validate.reason, validate.operations, validate.persistent) == (Reason.VALIDATE,
                                                                          frozenset({"CREATE", "DELETE"}), True)
    assert (mutate.reason, mutate.subresource, mutate.operations) == (Reason.MUTATE, "status", None)
    assert (up.id, up.from_version, up.to_version, down.id) == ("both/v2-v1", "v2", "v1", "both/v1-v2")
    assert registry.webhooks(Reason.CONVERT) == [up, down]
    assert registry.resources() == [ResourceRef.parse("gadgets")]  # watched for `created` only
    assert registry.for_resource(ResourceRef.parse("gadgets")) == [h for h in registry.handlers if h.id == "created"]
    assert registry.for_resource(ResourceRef.parse("hooks.opd.dev/v1/gadgets")) == []
    with pytest.raises(ConfigError, match="expected one of CREATE"):
        opd.on.validate("gadgets", operation="PATCH")
    with pytest.raises(ConfigError, match="from 1 to 30"):
        opd.on.mutate("gadgets", timeout=60)
    with pytest.raises(ConfigError, match="two different versions"):
        opd.on.convert("gadgets", from_version="v1", to_version="g/v1")


# -- the daemon's [webhooks] -----------------------------------------------------------------------------------------


def test_the_webhooks_section_is_checked_and_documented(tmp_path: Path) -> None:
    section = config.parse('[webhooks]\nlisten = "0.0.0.0:8443"\nhost = "192.168.122.1"\ncert_dir = "certs"\n'
                           'managed = "hooks.example.com"\n', path=tmp_path / "opd.toml").webhooks
    assert section == config.WebhooksSection(listen=config.Listen("0.0.0.0", 8443), host="192.168.122.1",
                                             cert_dir=str(tmp_path / "certs"), managed="hooks.example.com")
    assert config.parse('[webhooks]\nmanaged = ""\n').webhooks.managed == ""
    with pytest.raises(config.ConfigFileError) as err:
        config.parse('[webhooks]\nlisten = "x"\nhost = "https://h"\nurl = "http://u"\nservice = "s"\nmanaged = "one"\n'
                     'cert_dri = "x"\n')
    assert err.value.problems == [
        "[webhooks].cert_dri: unknown key (did you mean 'cert_dir'?)",
        "[webhooks].host: expected a host name or an IP address (no scheme, port or path), got 'https://h'",
        "[webhooks].url: expected an https:// URL without query or fragment, got 'http://u'",
        "[webhooks].service: expected \"namespace/name\" or \"namespace/name:port\", got 's'",
        "[webhooks]: host and url and service: set one of them (how the API server reaches opd)",
        "[webhooks].managed: expected a DNS name with a dot (webhooks are named <handler>.<plugin>.<managed>), "
        "or \"\" for none; got 'one'",
        "[webhooks].listen: expected \"HOST:PORT\" (e.g. \"127.0.0.1:8080\"), got 'x'",
    ]
    shown = config.parse('[webhooks]\nservice = "opd/hooks:443"\nmanaged = ""\n')
    assert config.parse(rendering.render(shown)).webhooks == shown.webhooks
    text = (REPO / "etc" / "opd.toml").read_text()
    block = text.split("\n[webhooks]\n", 1)[1].split("\n[plugins]\n", 1)[0]
    assert set(re.findall(r"^# ([a-z_]+) = ", block, re.M)) == set(config._WEBHOOKS_KEYS)
    assert '# listen = "127.0.0.1:9443"' in block and '# managed = "opd.dev"' in block
    assert '# excluded_namespaces = ["kube-system"]' in block


def test_the_daemon_says_which_namespaces_its_webhooks_leave_out() -> None:
    assert config.parse("").webhooks.excluded_namespaces == ("kube-system",)
    section = config.parse('[webhooks]\nexcluded_namespaces = ["kube-system", "infra"]\n').webhooks
    assert section.excluded_namespaces == ("kube-system", "infra")
    assert config.parse(rendering.render(config.parse('[webhooks]\nexcluded_namespaces = []\n'))
                        ).webhooks.excluded_namespaces == ()
    with pytest.raises(config.ConfigFileError) as err:
        config.parse('[webhooks]\nexcluded_namespaces = ["Kube_System", 3]\n')
    assert err.value.problems == [
        "[webhooks].excluded_namespaces[0]: expected a namespace's name (a DNS label), got 'Kube_System'",
        "[webhooks].excluded_namespaces[1]: expected a string, got integer",
    ]
    assert ipaddress.ip_address(config.WebhooksSection().listen.host).is_loopback


async def test_a_server_with_certificates_that_cannot_be_read_says_so_in_one_line(tmp_path: Path) -> None:
    server = WebhookServer(certfile=tmp_path / "missing.crt", pkeyfile=tmp_path / "missing.key")
    with pytest.raises(ConfigError, match=r"webhook server: cannot read .*missing.crt: No such file"):
        await server.start()
    assert not server.started
    made = certificates.make(["127.0.0.1"])
    (tmp_path / "tls.crt").write_bytes(made.cert)
    (tmp_path / "tls.key").write_bytes(b"not a key")
    server = WebhookServer(certfile=tmp_path / "tls.crt", pkeyfile=tmp_path / "tls.key")
    with pytest.raises(ConfigError, match="cannot load its certificate"):
        await server.start()
