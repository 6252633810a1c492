"""Webhook inputs without a cluster: the certificate folder opd trusts (owner, mode, links) and how
it writes there; request bodies decoded under bounds; review shapes checked field by field; the
namespaces the managed configurations leave out."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

import opd
from opd.errors import ConfigError, WebhookError
from opd.registry import Reason, WebhookHandler
from opd.resources import Resource, ResourceRef
from opd.webhooks import admission, bodies, certificates, conversion, management
from opd.webhooks.bodies import BadBody
from opd.webhooks.listening import Budget

HOSTS = ["127.0.0.1", "localhost"]


# -- the certificate folder ------------------------------------------------------------------------------------------


def _made(folder: Path) -> Path:
    certificates.keep(folder, HOSTS)
    return folder


def _not_opds(path: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """Make ``path`` belong to a user that is neither opd's nor root; returns that uid."""
    if os.geteuid() == 0:
        os.chown(path, 12345, -1)
        return 12345
    monkeypatch.setattr(os, "geteuid", lambda: 12345)  # opd runs as another user than the file's
    return os.stat(path).st_uid


def test_a_folder_or_file_others_may_write_is_refused_in_one_line(tmp_path: Path) -> None:
    open_to_all = _made(tmp_path / "open")
    open_to_all.chmod(0o777)
    with pytest.raises(ConfigError, match=r"refusing the folder .*/open: writable by others \(777\)"):
        certificates.keep(open_to_all, HOSTS)
    planted = _made(tmp_path / "planted")
    (planted / certificates.CA_KEY_FILE).chmod(0o620)
    with pytest.raises(ConfigError, match=r"refusing .*/planted/ca.key: writable by its group \(620\)"):
        certificates.keep(planted, HOSTS)


def test_a_folder_someone_else_owns_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    theirs = _made(tmp_path / "theirs")
    other = _not_opds(theirs, monkeypatch)
    with pytest.raises(ConfigError, match=rf"refusing the folder {theirs}: owned by uid {other}, not by opd's user"):
        certificates.keep(theirs, HOSTS)


def test_a_file_someone_else_owns_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _made(tmp_path / "certs")
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root (the folder's case runs as any user)")
    os.chown(folder / certificates.CA_FILE, 12345, -1)
    with pytest.raises(ConfigError, match=r"refusing .*/certs/ca.crt: owned by uid 12345"):
        certificates.keep(folder, HOSTS)


def test_links_are_followed_only_inside_the_folder_as_a_mounted_secret_has_them(tmp_path: Path) -> None:
    made = certificates.make(HOSTS)
    secret = tmp_path / "secret"  # a Secret volume: tls.crt -> ..data/tls.crt, ..data -> ..2026_12_05
    (secret / "..2026_12_05").mkdir(parents=True)
    (secret / "..2026_12_05" / "tls.crt").write_bytes(made.cert)
    (secret / "..2026_12_05" / "tls.key").write_bytes(made.key)
    (secret / "..data").symlink_to("..2026_12_05")
    for name in ("tls.crt", "tls.key"):
        (secret / name).symlink_to(f"..data/{name}")
    used, done = certificates.keep(secret, HOSTS)
    assert done == "provided" and used.cert == made.cert

    outside = tmp_path / "elsewhere.key"
    outside.write_bytes(made.key)
    planted = _made(tmp_path / "planted")
    (planted / certificates.CA_KEY_FILE).unlink()
    (planted / certificates.CA_KEY_FILE).symlink_to(outside)
    with pytest.raises(ConfigError, match=r"refusing .*/planted/ca.key: a link out of its folder"):
        certificates.keep(planted, HOSTS)


def test_a_folder_others_may_write_is_used_on_a_read_only_mount(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    made = certificates.make(HOSTS)
    secret = tmp_path / "secret"  # kubelet mounts Secrets with mode 1777, read-only
    secret.mkdir()
    (secret / "tls.crt").write_bytes(made.cert)
    (secret / "tls.key").write_bytes(made.key)
    secret.chmod(0o1777)
    with pytest.raises(ConfigError, match="writable by others"):
        certificates.keep(secret, HOSTS)
    monkeypatch.setattr(certificates, "_read_only", lambda path: True)
    assert certificates.keep(secret, HOSTS)[1] == "provided"


def test_files_are_written_under_a_fresh_name_and_never_through_a_planted_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    folder = tmp_path / "certs"
    folder.mkdir(mode=0o700)
    # The name a writer would use for its partial file, and the file itself, both linked to the victim.
    (folder / f".tls.key.{os.getpid()}").symlink_to(victim)
    (folder / "tls.key").symlink_to(victim)
    certificates._write(folder / "tls.key", b"KEY")
    assert victim.read_text() == "untouched"
    assert not (folder / "tls.key").is_symlink() and (folder / "tls.key").read_bytes() == b"KEY"
    assert (folder / "tls.key").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in folder.iterdir()) == [f".tls.key.{os.getpid()}", "tls.key"]  # no partial left


# -- bodies --------------------------------------------------------------------------------------------------------


def test_bodies_decode_to_an_object_or_a_one_line_400() -> None:
    assert bodies.decode(b'{"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}
    cases = {b"[]": "got a JSON list", b"": "zero-length", b"\xff": "UTF-8", b'"\\udc00"': "surrogate",
             b"[" * 2000: "depth limit", b'{"a": 1e999}': "infinity",
             ('{"a":' * 101 + "1" + "}" * 101).encode(): "more than 100 levels deep"}
    for body, said in cases.items():
        with pytest.raises(BadBody, match=said) as err:
            bodies.decode(body)
        assert err.value.status == 400 and "\n" not in str(err.value)
    assert bodies.depth({"a": [[{}]]}) == 4 and bodies.depth(1) == 0
    assert bodies.decode(('{"a":' * 99 + "1" + "}" * 99).encode())


async def test_a_body_is_refused_as_soon_as_it_passes_the_limit() -> None:
    class Stream:
        def __init__(self, chunks: list[bytes]) -> None:
            self.chunks = chunks
            self.read = 0

        async def readany(self) -> bytes:
            self.read += 1
            return self.chunks.pop(0) if self.chunks else b""

    assert await bodies.read(Stream([b"ab", b"cd"]), limit=4) == b"abcd"
    endless = Stream([b"x" * 3] * 1000)
    with pytest.raises(BadBody, match="over 4 bytes") as err:
        await bodies.read(endless, limit=4)
    assert err.value.status == 413 and endless.read == 2  # not one chunk more


async def test_bodies_held_at_once_stay_within_the_budget() -> None:
    budget = Budget(10)
    assert await budget.take(6) == 6
    second = asyncio.ensure_future(budget.take(6))
    await asyncio.sleep(0.05)
    assert not second.done() and budget.held == 6  # waits: 12 would be over
    budget.give(6)
    assert await asyncio.wait_for(second, 5) == 6 and budget.held == 6
    budget.give(6)
    assert await budget.take(50) == 10  # more than the whole budget: all of it, once nothing else is held


# -- review shapes -----------------------------------------------------------------------------------------------


def _admission(**request: Any) -> dict[str, Any]:
    base = {"uid": "u", "resource": {"group": "", "version": "v1", "resource": "pods"}, "operation": "CREATE",
            "object": {"metadata": {"name": "p", "labels": {"a": "b"}}}}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {**base, **request}}


@pytest.mark.parametrize(("change", "said"), [
    ({"resource": "x"}, "request.resource: expected an object, got a string"),
    ({"resource": {"group": ""}}, "request.resource.resource: missing"),
    ({"uid": ""}, "request.uid: missing"),
    ({"uid": 7}, "request.uid: expected a string, got a number"),
    ({"operation": None}, "request.operation: missing"),
    ({"object": None}, "neither object nor oldObject"),
    ({"object": []}, "request.object: expected an object, got a list"),
    ({"object": {"metadata": {"labels": ["a"]}}}, "object.metadata.labels: expected an object, got a list"),
    ({"object": {"metadata": {"annotations": {"a": None}}}}, "object.metadata.annotations: expected strings"),
    ({"object": {"metadata": {"name": 1}}}, "object.metadata.name: expected a string"),
    ({"kind": "Pod"}, "request.kind: expected an object, got a string"),
    ({"dryRun": 1}, "request.dryRun: expected a boolean, got a number"),
    ({"name": True}, "request.name: expected a string, got a boolean"),
    ({"userInfo": []}, "request.userInfo: expected an object"),
])
def test_a_malformed_admission_review_says_which_field(change: dict[str, Any], said: str) -> None:
    with pytest.raises(WebhookError, match=said.replace("[", r"\[")):
        admission.read(_admission(**change))


def test_a_well_formed_admission_review_reads_as_before() -> None:
    request = admission.read(_admission(oldObject={"metadata": {"name": "p"}}, dryRun=False, name="p"))
    assert (request.uid, request.plural, request.operation, request.name, request.dryrun) == (
        "u", "pods", "CREATE", "p", False)
    assert admission.read(_admission(object=None, oldObject={}, operation="DELETE")).body == {}


def test_a_malformed_conversion_review_says_which_field() -> None:
    def review(**request: Any) -> dict[str, Any]:
        return {"request": {"uid": "u", "desiredAPIVersion": "g/v2", **request}}

    assert conversion.read(review(objects=[{"apiVersion": "g/v1", "metadata": {}}])) == (
        "u", "g/v2", [{"apiVersion": "g/v1", "metadata": {}}])
    for change, said in [({"objects": {}}, "objects: expected a list"), ({"objects": [[]]}, r"objects\[0\]"),
                         ({"desiredAPIVersion": 2}, "desiredAPIVersion: expected a string"),
                         ({"objects": [{"kind": 1}]}, r"objects\[0\].kind"),
                         ({"objects": [{"metadata": {"labels": {"a": 1}}}]}, "labels: expected strings")]:
        with pytest.raises(WebhookError, match=said):
            conversion.read(review(**change))


# -- namespaces left out -----------------------------------------------------------------------------------------


def test_managed_webhooks_leave_out_kube_system_and_opds_own_namespace(tmp_path: Path) -> None:
    assert opd.OperatorSettings().admission.excluded_namespaces == ["kube-system"]
    assert management.namespace_selector(["kube-system", "opd", "kube-system", ""]) == {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", "opd"]}]}
    assert management.namespace_selector([]) == {}
    handler = WebhookHandler(fn=lambda **_: None, id="check", reason=Reason.VALIDATE,
                             resource=ResourceRef.parse("pods"))
    pods = Resource(group="", version="v1", plural="pods", kind="Pod", namespaced=True)
    [entry] = management.entries([(handler, pods)], scope="a.opd.dev", client_config={"url": "https://h"},
                                 excluded=["kube-system"])
    assert entry["namespaceSelector"]["matchExpressions"][0]["values"] == ["kube-system"]
    (tmp_path / "namespace").write_text("opd-system\n")
    assert management.own_namespace(tmp_path / "namespace") == "opd-system"
    assert management.own_namespace(tmp_path / "none") is None
