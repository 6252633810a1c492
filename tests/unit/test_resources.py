"""Unit tests for opd/resources.py: parsing references, matching and selecting served resources."""

from __future__ import annotations

from typing import Any

import pytest

from opd.errors import ConfigError
from opd.resources import Resource, ResourceRef, select

KEX = Resource(group="kopf.dev", version="v1", plural="kopfexamples", kind="KopfExample", namespaced=True,
               singular="kopfexample", short_names=("kex", "kexes"), subresources=frozenset({"status"}))
PODS = Resource(group="", version="v1", plural="pods", kind="Pod", namespaced=True,
                singular="pod", short_names=("po",))
NODES = Resource(group="", version="v1", plural="nodes", kind="Node", namespaced=False,
                 singular="node", short_names=("no",))
CRBS = Resource(group="rbac.authorization.k8s.io", version="v1", plural="clusterrolebindings",
                kind="ClusterRoleBinding", namespaced=False, singular="clusterrolebinding")


# --- ResourceRef.parse -----------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "kwargs", "expected"), [
    (("kopfexamples",), {}, ResourceRef("kopfexamples", None, None)),
    (("kopfexamples.kopf.dev",), {}, ResourceRef("kopfexamples", "kopf.dev", None)),
    (("kopf.dev", "kopfexamples"), {}, ResourceRef("kopfexamples", "kopf.dev", None)),
    (("kopf.dev/v1", "kopfexamples"), {}, ResourceRef("kopfexamples", "kopf.dev", "v1")),
    (("kopf.dev", "v1", "kopfexamples"), {}, ResourceRef("kopfexamples", "kopf.dev", "v1")),
    (("kopf.dev/v1/kopfexamples",), {}, ResourceRef("kopfexamples", "kopf.dev", "v1")),
    (("v1", "pods"), {}, ResourceRef("pods", "", "v1")),
    (("v1/pods",), {}, ResourceRef("pods", "", "v1")),
    (("v1beta1", "things"), {}, ResourceRef("things", "", "v1beta1")),
    (("apps/v1", "deployments"), {}, ResourceRef("deployments", "apps", "v1")),
    (("KopfExample",), {}, ResourceRef("KopfExample", None, None)),
    # Keywords.
    ((), {"plural": "kopfexamples"}, ResourceRef("kopfexamples", None, None)),
    ((), {"kind": "KopfExample"}, ResourceRef("KopfExample", None, None)),
    ((), {"plural": "kopfexamples", "group": "kopf.dev"}, ResourceRef("kopfexamples", "kopf.dev", None)),
    ((), {"plural": "kopfexamples", "group": "kopf.dev", "version": "v1"},
     ResourceRef("kopfexamples", "kopf.dev", "v1")),
    ((), {"kind": "KopfExample", "group": "kopf.dev", "version": "v1"},
     ResourceRef("KopfExample", "kopf.dev", "v1")),
    ((), {"kind": "Pod", "version": "v1"}, ResourceRef("Pod", None, "v1")),
    (("kopfexamples",), {"group": "kopf.dev", "version": "v1"}, ResourceRef("kopfexamples", "kopf.dev", "v1")),
])
def test_parse_spellings(args: tuple[str, ...], kwargs: dict[str, Any], expected: ResourceRef) -> None:
    assert ResourceRef.parse(*args, **kwargs) == expected


def test_parse_spellings_are_equivalent() -> None:
    refs = {
        ResourceRef.parse("kopf.dev/v1", "kopfexamples"),
        ResourceRef.parse("kopf.dev", "v1", "kopfexamples"),
        ResourceRef.parse("kopf.dev/v1/kopfexamples"),
        ResourceRef.parse(group="kopf.dev", version="v1", plural="kopfexamples"),
    }
    assert len(refs) == 1


@pytest.mark.parametrize(("args", "kwargs"), [
    (("core", "v1", "pods"), {}),
    (("core/v1", "pods"), {}),
    (("core/v1/pods",), {}),
    (("pods",), {"group": "core", "version": "v1"}),
    ((), {"plural": "pods", "group": "core", "version": "v1"}),
])
def test_parse_core_group_is_empty(args: tuple[str, ...], kwargs: dict[str, Any]) -> None:
    ref = ResourceRef.parse(*args, **kwargs)
    assert ref == ResourceRef("pods", "", "v1")
    assert ref.group == ""


def test_parse_core_group_without_version() -> None:
    assert ResourceRef.parse("core", "pods") == ResourceRef("pods", "", None)


@pytest.mark.parametrize(("args", "kwargs"), [
    ((), {}),
    (("",), {}),
    (("kopf.dev", ""), {}),
    (("", "kopfexamples"), {}),
    (("kopf.dev", "v1", "kopfexamples", "extra"), {}),
    (("kopf.dev/v1/kopfexamples/extra",), {}),
    (("kopf.dev/",), {}),
    ((".kopf.dev",), {}),
    ((123,), {}),
    ((None,), {}),
    ((), {"group": "kopf.dev", "version": "v1"}),
    ((), {"plural": ""}),
])
def test_parse_rejects_bad_input(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        ResourceRef.parse(*args, **kwargs)


@pytest.mark.parametrize("args", [
    ("kopf.dev//kopfexamples",),
    ("kopf.dev/", "kopfexamples"),
])
def test_parse_rejects_empty_version_segment(args: tuple[str, ...]) -> None:
    # parse() refuses empty names ("resource names must be non-empty strings"); a version emptied
    # by the '/' split is just as empty, and would make a reference that no served resource matches.
    with pytest.raises(ConfigError):
        ResourceRef.parse(*args)


def test_ref_str() -> None:
    assert str(ResourceRef("kopfexamples", "kopf.dev", "v1")) == "kopf.dev/v1/kopfexamples"
    assert str(ResourceRef("pods", "", "v1")) == "v1/pods"
    assert str(ResourceRef("pods")) == "pods"


# --- ResourceRef.matches ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["kopfexamples", "kopfexample", "kex", "kexes", "KopfExample", "KOPFEXAMPLE",
                                  "kopfExample"])
def test_matches_any_name(name: str) -> None:
    assert ResourceRef(name).matches(KEX)


@pytest.mark.parametrize("name", ["pods", "kopfexamplez", "KEX", "examples", "Kopf", ""])
def test_matches_rejects_other_names(name: str) -> None:
    assert not ResourceRef(name).matches(KEX)


def test_matches_narrowed_by_group_and_version() -> None:
    assert ResourceRef("kex", group="kopf.dev").matches(KEX)
    assert ResourceRef("kex", group="kopf.dev", version="v1").matches(KEX)
    assert ResourceRef("kex", version="v1").matches(KEX)
    assert not ResourceRef("kex", group="other.dev").matches(KEX)
    assert not ResourceRef("kex", group="").matches(KEX)
    assert not ResourceRef("kex", group="kopf.dev", version="v2").matches(KEX)
    assert not ResourceRef("kex", version="v1beta1").matches(KEX)


def test_matches_core_group_explicitly() -> None:
    assert ResourceRef.parse("v1", "pods").matches(PODS)
    assert ResourceRef.parse("core", "pod").matches(PODS)
    assert not ResourceRef.parse("apps", "pods").matches(PODS)


# --- Resource ----------------------------------------------------------------------------------------

def test_resource_names_and_api_version() -> None:
    assert KEX.names == frozenset({"kopfexamples", "kopfexample", "kex", "kexes"})
    no_singular = Resource(group="", version="v1", plural="bindings", kind="Binding", namespaced=True)
    assert no_singular.names == frozenset({"bindings"})
    assert KEX.api_version == "kopf.dev/v1"
    assert PODS.api_version == "v1"
    assert str(KEX) == "kopfexamples.v1.kopf.dev"
    assert str(PODS) == "pods.v1"


@pytest.mark.parametrize(("resource", "args", "expected"), [
    # Core, namespaced.
    (PODS, {}, "/api/v1/pods"),
    (PODS, {"namespace": "ns1"}, "/api/v1/namespaces/ns1/pods"),
    (PODS, {"namespace": "ns1", "name": "p1"}, "/api/v1/namespaces/ns1/pods/p1"),
    (PODS, {"namespace": "ns1", "name": "p1", "subresource": "status"}, "/api/v1/namespaces/ns1/pods/p1/status"),
    (PODS, {"name": "p1"}, "/api/v1/pods/p1"),
    # Core, cluster-scoped: a namespace given is not part of the path.
    (NODES, {}, "/api/v1/nodes"),
    (NODES, {"name": "n1"}, "/api/v1/nodes/n1"),
    (NODES, {"namespace": "ns1", "name": "n1"}, "/api/v1/nodes/n1"),
    (NODES, {"name": "n1", "subresource": "status"}, "/api/v1/nodes/n1/status"),
    # Grouped, namespaced.
    (KEX, {}, "/apis/kopf.dev/v1/kopfexamples"),
    (KEX, {"namespace": "ns1"}, "/apis/kopf.dev/v1/namespaces/ns1/kopfexamples"),
    (KEX, {"namespace": "ns1", "name": "x"}, "/apis/kopf.dev/v1/namespaces/ns1/kopfexamples/x"),
    (KEX, {"namespace": "ns1", "name": "x", "subresource": "status"},
     "/apis/kopf.dev/v1/namespaces/ns1/kopfexamples/x/status"),
    # A subresource without a name means nothing.
    (KEX, {"namespace": "ns1", "subresource": "status"}, "/apis/kopf.dev/v1/namespaces/ns1/kopfexamples"),
    # Grouped, cluster-scoped.
    (CRBS, {}, "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"),
    (CRBS, {"namespace": "ns1", "name": "b"}, "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/b"),
])
def test_resource_path(resource: Resource, args: dict[str, str], expected: str) -> None:
    assert resource.path(**args) == expected


# --- select() ----------------------------------------------------------------------------------------

def _res(group: str, version: str, plural: str, kind: str, *, preferred: bool = True) -> Resource:
    return Resource(group=group, version=version, plural=plural, kind=kind, namespaced=True,
                    singular=kind.lower(), preferred=preferred)


HPA_V1 = _res("autoscaling", "v1", "horizontalpodautoscalers", "HorizontalPodAutoscaler", preferred=False)
HPA_V2 = _res("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", preferred=True)
EVENTS_CORE = _res("", "v1", "events", "Event")
EVENTS_K8S = _res("events.k8s.io", "v1", "events", "Event")
ALL = [PODS, NODES, KEX, HPA_V1, HPA_V2, EVENTS_K8S, EVENTS_CORE]


def test_select_preferred_version_when_none_named() -> None:
    assert select(ResourceRef("horizontalpodautoscalers"), ALL) == [HPA_V2]
    assert select(ResourceRef("HorizontalPodAutoscaler", group="autoscaling"), ALL) == [HPA_V2]
    # The order of discovery does not matter.
    assert select(ResourceRef("horizontalpodautoscalers"), list(reversed(ALL))) == [HPA_V2]


def test_select_explicit_version() -> None:
    assert select(ResourceRef("horizontalpodautoscalers", version="v1"), ALL) == [HPA_V1]
    assert select(ResourceRef("horizontalpodautoscalers", group="autoscaling", version="v2"), ALL) == [HPA_V2]
    assert select(ResourceRef("horizontalpodautoscalers", version="v3"), ALL) == []


def test_select_without_preferred_falls_back_to_served() -> None:
    only = _res("example.com", "v1alpha1", "widgets", "Widget", preferred=False)
    assert select(ResourceRef("widgets"), [only]) == [only]


def test_select_nothing() -> None:
    assert select(ResourceRef("nonexistent"), ALL) == []
    assert select(ResourceRef("pods"), []) == []


def test_select_ambiguous_prefers_core_group() -> None:
    assert select(ResourceRef("events"), ALL) == [EVENTS_CORE]
    assert select(ResourceRef("Event"), [EVENTS_K8S, EVENTS_CORE]) == [EVENTS_CORE]
    assert select(ResourceRef("events", version="v1"), ALL) == [EVENTS_CORE]


def test_select_ambiguous_with_group_named() -> None:
    assert select(ResourceRef("events", group="events.k8s.io"), ALL) == [EVENTS_K8S]
    assert select(ResourceRef.parse("events.k8s.io", "events"), ALL) == [EVENTS_K8S]
    assert select(ResourceRef.parse("v1", "events"), ALL) == [EVENTS_CORE]


def test_select_ambiguous_without_core_returns_all_groups() -> None:
    a = _res("a.example.com", "v1", "widgets", "Widget")
    b = _res("b.example.com", "v1", "widgets", "Widget")
    assert select(ResourceRef("widgets"), [a, b]) == [a, b]


def test_select_one_per_group() -> None:
    # Two versions both flagged preferred (a misreport): still one resource per group.
    v1 = _res("example.com", "v1", "widgets", "Widget")
    v2 = _res("example.com", "v2", "widgets", "Widget")
    assert len(select(ResourceRef("widgets"), [v1, v2])) == 1
