"""Kopf's names on opd: the children toolkit, filter combinators, type names, decorator options."""

from __future__ import annotations

import asyncio
import base64
import itertools
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

import opd
from opd.engine import spawning
from opd.engine.invocation import invoke
from opd.kube.credentials import ConnectionInfo, configuration_from
from opd.registry import Handler, Reason, accepted_kwargs
from opd.resources import ResourceRef
from opd.settings import RetrySettings

OWNER = {"apiVersion": "kopf.dev/v1", "kind": "KopfExample",
         "metadata": {"name": "parent", "namespace": "ns1", "uid": "uid-1", "labels": {"app": "demo", "tier": "x"}}}
OWNER_REF = {"apiVersion": "kopf.dev/v1", "kind": "KopfExample", "name": "parent", "uid": "uid-1",
             "controller": True, "blockOwnerDeletion": True}


def test_adopt_a_dict_gives_it_owner_namespace_name_and_labels() -> None:
    child: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "spec": {}}
    opd.adopt(child, owner=OWNER)
    assert child["metadata"] == {"ownerReferences": [OWNER_REF], "generateName": "parent-", "namespace": "ns1",
                                 "labels": {"app": "demo", "tier": "x"}}
    opd.adopt(child, owner=OWNER)  # twice: still one reference
    assert child["metadata"]["ownerReferences"] == [OWNER_REF]


def test_adopt_keeps_what_the_child_has_unless_forced() -> None:
    child: dict[str, Any] = {"metadata": {"name": "mine", "namespace": "other", "labels": {"app": "own"}}}
    opd.adopt(child, owner=OWNER)
    assert child["metadata"]["name"] == "mine" and "generateName" not in child["metadata"]
    assert child["metadata"]["namespace"] == "other"
    assert child["metadata"]["labels"] == {"app": "own", "tier": "x"}
    opd.adopt(child, owner=OWNER, forced=True, strict=True)
    assert child["metadata"]["name"] == "parent"
    assert child["metadata"]["namespace"] == "ns1"
    assert child["metadata"]["labels"] == {"app": "demo", "tier": "x"}


def test_label_reaches_nested_objects_that_exist() -> None:
    deployment: dict[str, Any] = {"spec": {"template": {"spec": {}}}}
    pod: dict[str, Any] = {"spec": {}}
    opd.label([deployment, pod], {"team": "a"}, nested=["spec.template"])
    assert deployment["metadata"]["labels"] == {"team": "a"}
    assert deployment["spec"]["template"]["metadata"]["labels"] == {"team": "a"}
    assert pod == {"spec": {}, "metadata": {"labels": {"team": "a"}}}  # no template made up for a pod


def test_owner_references_are_added_once_and_removed_by_uid() -> None:
    other = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "o", "uid": "uid-2"}}
    child: dict[str, Any] = {}
    opd.append_owner_reference(child, OWNER)
    opd.append_owner_reference(child, other, controller=False)
    opd.append_owner_reference(child, OWNER)
    assert [r["uid"] for r in child["metadata"]["ownerReferences"]] == ["uid-1", "uid-2"]
    assert child["metadata"]["ownerReferences"][1]["controller"] is False
    opd.remove_owner_reference(child, OWNER)
    assert [r["uid"] for r in child["metadata"]["ownerReferences"]] == ["uid-2"]
    with pytest.raises(ValueError, match="no uid"):
        opd.build_owner_reference({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}})
    assert opd.build_object_reference(OWNER) == {"apiVersion": "kopf.dev/v1", "kind": "KopfExample",
                                                 "name": "parent", "uid": "uid-1", "namespace": "ns1"}


def test_toolkit_works_on_kubernetes_asyncio_models() -> None:
    pod = client.V1Pod(api_version="v1", kind="Pod", spec=client.V1PodSpec(containers=[]))  # no metadata yet
    deployment = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="web", labels={"app": "own"}),
        spec=client.V1DeploymentSpec(selector=client.V1LabelSelector(), template=client.V1PodTemplateSpec()))
    opd.adopt([pod, deployment], owner=OWNER, nested="spec.template")
    assert pod.metadata.generate_name == "parent-" and pod.metadata.namespace == "ns1"
    assert pod.metadata.labels == {"app": "demo", "tier": "x"}
    ref = pod.metadata.owner_references[0]
    assert isinstance(ref, client.V1OwnerReference)
    assert (ref.api_version, ref.kind, ref.name, ref.uid, ref.controller, ref.block_owner_deletion) == (
        "kopf.dev/v1", "KopfExample", "parent", "uid-1", True, True)
    assert deployment.metadata.name == "web" and deployment.metadata.generate_name is None
    assert deployment.metadata.labels == {"app": "own", "tier": "x"}
    assert deployment.spec.template.metadata.labels == {"app": "demo", "tier": "x"}
    opd.remove_owner_reference(pod, OWNER)
    assert pod.metadata.owner_references == []
    # A model can be the owner too.
    owner_model = client.V1ConfigMap(api_version="v1", kind="ConfigMap",
                                     metadata=client.V1ObjectMeta(name="cm", namespace="ns2", uid="uid-3"))
    child: dict[str, Any] = {}
    opd.adopt(child, owner=owner_model)
    assert child["metadata"]["ownerReferences"][0]["uid"] == "uid-3"
    assert child["metadata"]["namespace"] == "ns2"


def test_toolkit_edits_the_dict_of_an_object_that_wraps_one() -> None:
    class Wrapped:  # pykube-ng's objects keep their dict in .obj
        def __init__(self, obj: dict[str, Any]) -> None:
            self.obj = obj

    wrapped = Wrapped({"kind": "Pod"})
    opd.adopt(wrapped, owner=OWNER)
    assert wrapped.obj["metadata"]["ownerReferences"] == [OWNER_REF]


def test_harmonize_naming_and_adjust_namespace_on_their_own() -> None:
    objs: list[dict[str, Any]] = [{}, {"metadata": {"generateName": "x-"}}]
    opd.harmonize_naming(objs, "base")
    assert [o["metadata"].get("generateName") for o in objs] == ["base-", "x-"]
    opd.harmonize_naming(objs, "base", forced=True, strict=True)
    assert [o["metadata"].get("name") for o in objs] == ["base", "base"]
    assert all("generateName" not in o["metadata"] for o in objs)
    opd.adjust_namespace(objs, "ns9")
    assert [o["metadata"]["namespace"] for o in objs] == ["ns9", "ns9"]
    cluster_owner = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1", "uid": "u"}}
    fresh: dict[str, Any] = {}
    opd.adopt(fresh, owner=cluster_owner)  # cluster-scoped: it gives no namespace
    assert "namespace" not in fresh["metadata"] and fresh["metadata"]["generateName"] == "node-1-"


def test_without_an_owner_outside_a_handler_it_says_so() -> None:
    with pytest.raises(opd.OpdError, match=r"opd\.adopt: give owner="):
        opd.adopt({})
    with pytest.raises(TypeError, match="expected an object"):
        opd.adopt(42, owner=OWNER)


@pytest.mark.parametrize("is_async", [False, True])
async def test_inside_a_handler_the_owner_is_its_object(is_async: bool) -> None:
    made: list[dict[str, Any]] = []

    def sync_fn(**_: Any) -> None:
        child: dict[str, Any] = {}
        opd.adopt(child)
        made.append(child)

    async def async_fn(**_: Any) -> None:
        sync_fn()

    fn = async_fn if is_async else sync_fn
    handler = Handler(fn=fn, id="h", reason=Reason.CREATE, resource=None, accepts=accepted_kwargs(fn))
    await invoke(handler, {"body": OWNER}, executor=None)
    assert made[0]["metadata"]["ownerReferences"] == [OWNER_REF]
    with pytest.raises(opd.OpdError):  # the handler's object does not outlive its call
        opd.adopt({})


async def test_param_reaches_the_handler() -> None:
    seen = []

    @opd.on.create("kex", param={"colour": "blue"}, registry=opd.OperatorRegistry())
    def fn(param: Any, **_: Any) -> None:
        seen.append(param)

    handler = Handler(fn=fn, id="fn", reason=Reason.CREATE, resource=None, accepts=accepted_kwargs(fn),
                      param={"colour": "blue"})
    await invoke(handler, {"body": OWNER}, executor=None)
    assert seen == [{"colour": "blue"}]


def test_filter_combinators_pass_only_the_kwargs_each_callback_names() -> None:
    def named(name: str, **_: Any) -> bool:
        return name.startswith("a")

    def labelled(labels: dict[str, str]) -> bool:
        return "x" in labels

    kwargs = {"name": "abc", "labels": {"y": "1"}, "spec": {}}
    assert opd.any_([named, labelled])(**kwargs) is True
    assert opd.all_([named, labelled])(**kwargs) is False
    assert opd.none_([labelled])(**kwargs) is True
    assert opd.not_(named)(**kwargs) is False
    assert opd.not_(lambda value: value == "v")("w") is True  # a value callback: positional value first


def test_decorators_take_kopf_spellings() -> None:
    import opd.service.plugins  # binds the name opd.daemon to the daemon's package: it must still decorate

    registry = opd.OperatorRegistry()

    @opd.daemon("kex", backoff=3, cancellation_backoff=1.0, cancellation_timeout=0.5, cancellation_polling=2,
                annotations={"someannotation": "somevalue"}, registry=registry)
    async def background(**_: Any) -> None: ...

    @opd.timer("kopfexamples", idle=5, interval=2, sharp=True, registry=registry)
    def ticking(**_: Any) -> None: ...

    @opd.on.create("", "v1", "pods", registry=registry)  # Kopf's empty group for the core API
    @opd.on.event("apps", "v1", singular="deployment", registry=registry)
    def pods(**_: Any) -> None: ...

    @opd.on.login(errors=opd.ErrorsMode.PERMANENT, registry=registry)
    @opd.on.startup(param=1, registry=registry)
    @opd.on.cleanup(errors="ignored", retries=2, backoff=1, registry=registry)
    @opd.on.probe(errors="ignored", registry=registry)
    def activity(**_: Any) -> None: ...

    by_id = {(h.id, h.reason): h for h in registry.handlers}
    daemon = by_id[("background", Reason.DAEMON)]
    assert (daemon.cancellation_backoff, daemon.cancellation_timeout, daemon.backoff) == (1.0, 0.5, 3)
    timer = by_id[("ticking", Reason.TIMER)]
    assert (timer.interval, timer.idle, timer.sharp) == (2, 5, True)
    assert by_id[("pods", Reason.CREATE)].resource == ResourceRef(name="pods", group="", version="v1")
    assert by_id[("pods", Reason.EVENT)].resource == ResourceRef(name="deployment", group="apps", version="v1")
    assert by_id[("activity", Reason.LOGIN)].errors is opd.ErrorsMode.PERMANENT
    assert by_id[("activity", Reason.STARTUP)].param == 1
    assert {m.name for m in opd.ErrorsMode} == {"IGNORED", "TEMPORARY", "PERMANENT"}


def test_a_none_filter_value_and_a_category_are_refused_in_one_line() -> None:
    with pytest.raises(opd.ConfigError, match=r"labels=\{'somelabel': None\}: use opd.PRESENT"):
        opd.on.create("kex", labels={"somelabel": None})
    with pytest.raises(opd.ConfigError, match="category='all'"):
        opd.on.create(category="all")


def test_kopf_type_names_work_in_signatures_evaluated_at_definition() -> None:
    # No `from __future__ import annotations` in Kopf's examples: the names are evaluated at def time.
    source = (
        "import opd as kopf\n"
        "def fn(body: kopf.Body, spec: kopf.Spec, meta: kopf.Meta, status: kopf.Status, labels: kopf.Labels,\n"
        "       annotations: kopf.Annotations, diff: kopf.Diff, patch: kopf.Patch, logger: kopf.Logger,\n"
        "       memo: kopf.Memo, event: kopf.RawEvent, raw: kopf.RawBody, stopped: kopf.DaemonStopped,\n"
        "       settings: kopf.OperatorSettings, headers: kopf.Headers, sslpeer: kopf.SSLPeer,\n"
        "       resource: kopf.Resource, owner: kopf.OwnerReference) -> list[kopf.Body]:\n"
        "    return []\n"
    )
    namespace: dict[str, Any] = {}
    exec(compile(source, "kopf_style.py", "exec", dont_inherit=True), namespace)
    assert namespace["fn"].__annotations__["stopped"] is opd.Stopped
    assert opd.DiffOperation.ADD == "add" and opd.DaemonStoppingReason.RESOURCE_DELETED == "object deleted"
    assert opd.Memo(create_tpl="Hello, {name}!").create_tpl == "Hello, {name}!"


def test_connection_info_becomes_a_client_configuration(tmp_path: Path) -> None:
    pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    cfg = configuration_from(ConnectionInfo(server="https://10.0.0.1:6443/", ca_data=base64.b64encode(pem),
                                            token="t0k", insecure=False))
    assert cfg.host == "https://10.0.0.1:6443"
    assert cfg.verify_ssl is True
    assert Path(cfg.ssl_ca_cert).read_bytes() == pem
    assert Path(cfg.ssl_ca_cert).stat().st_mode & 0o077 == 0  # readable by this user alone
    assert cfg.api_key == {"BearerToken": "Bearer t0k"}  # what kubernetes_asyncio sends as Authorization
    basic = configuration_from(ConnectionInfo(server="https://h", username="u", password="p", insecure=True))
    assert (basic.api_key, basic.verify_ssl) == ({"BearerToken": "Basic dTpw"}, False)
    assert "t0k" not in repr(ConnectionInfo(server="https://h", token="t0k"))
    with pytest.raises(opd.LoginError, match="ca_data: neither PEM nor base64"):
        configuration_from(ConnectionInfo(server="https://h", ca_data="not base64!"))


def test_login_helpers_say_none_where_they_do_not_apply(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    assert opd.login_with_service_account() is None
    assert opd.login_with_kubeconfig() is None
    (tmp_path / "missing").write_text("apiVersion: v1\n")  # Kopf's: a ConnectionInfo, so a context is needed
    with pytest.raises(opd.LoginError, match=r"^login_with_kubeconfig: kubeconfig .*missing: no current-context$"):
        opd.login_with_kubeconfig()


def test_events_outside_an_operator_are_said_not_posted(caplog: pytest.LogCaptureFixture) -> None:
    from loguru import logger

    lines: list[str] = []
    sink = logger.add(lines.append, level="WARNING")
    try:
        opd.event([], type="Normal", reason="R", message="m")  # no children: nothing to say
        assert lines == []
        opd.event({"metadata": {"name": "x"}}, type="SomeType", reason="R", message="m")
        opd.info({"metadata": {"name": "x"}}, reason="AnyReason")  # Kopf lets the message out
    finally:
        logger.remove(sink)
    assert len(lines) == 2 and "outside a running operator" in lines[0]


def test_configure_sets_opd_logging_as_kopf_configure_does(capsys: pytest.CaptureFixture[str]) -> None:
    from loguru import logger

    from opd.logs import setup_logging

    try:
        opd.configure(verbose=True)
        logger.debug("debug line shown")
        opd.configure(quiet=True)
        logger.info("info line hidden")
        logger.warning("warning line shown")
        opd.configure(log_format=opd.LogFormat.JSON)
        logger.info("as json")
    finally:
        setup_logging("info", "text")
    err = capsys.readouterr().err
    assert "debug line shown" in err and "warning line shown" in err
    assert "info line hidden" not in err
    assert '"message": "as json"' in err


async def _spawn(handler: Handler) -> tuple[spawning.Spawner, dict[str, Any]]:
    spawner = spawning.Spawner(kwargs_for=lambda h, body, stopped, patch: {"stopped": stopped},
                              write_outcome=_no_write, executor=None, retries=RetrySettings(), stop_timeout=8.0)
    body: dict[str, Any] = {"metadata": {"uid": "u1"}, "spec": {}}
    await spawner.ensure("u1", body, [handler])
    return spawner, body


async def _no_write(*_: Any) -> None:
    return None


@pytest.mark.parametrize("sharp", [False, True])
async def test_a_sharp_timer_counts_its_interval_from_the_start_of_a_run(sharp: bool) -> None:
    starts: list[float] = []

    async def tick(**_: Any) -> None:
        starts.append(time.monotonic())
        await asyncio.sleep(0.3)

    handler = Handler(fn=tick, id="tick", reason=Reason.TIMER, resource=None, interval=0.4, sharp=sharp,
                      accepts=accepted_kwargs(tick))
    spawner, _ = await _spawn(handler)
    await asyncio.sleep(2.0)
    await spawner.stop_all("test over")
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    mean = sum(gaps) / len(gaps)
    assert (mean < 0.55) if sharp else (mean > 0.65), gaps  # 0.4 s sharp; 0.4 + 0.3 s otherwise


async def test_cancellation_backoff_then_cancellation_timeout_bound_a_daemon_that_ignores_both() -> None:
    cancelled = asyncio.Event()

    async def stubborn(**_: Any) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()  # and carries on a while: the wait after cancelling is bounded all the same
            await asyncio.sleep(1.5)

    handler = Handler(fn=stubborn, id="stubborn", reason=Reason.DAEMON, resource=None, cancellation_backoff=0.3,
                      cancellation_timeout=0.2, accepts=accepted_kwargs(stubborn))
    spawner, _ = await _spawn(handler)
    await asyncio.sleep(0.1)
    began = time.monotonic()
    await spawner.stop("u1", "object deleted")
    took = time.monotonic() - began
    assert cancelled.is_set()
    assert 0.45 <= took < 1.4, took  # 0.3 s grace + 0.2 s after cancelling (not the default 5 s)
    left = [t for t in asyncio.all_tasks() if t.get_name().startswith("opd daemon stubborn")]
    await asyncio.wait(left, timeout=5)  # the abandoned daemon ends by itself
