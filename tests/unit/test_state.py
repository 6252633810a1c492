"""Unit tests for opd/engine/state.py (essence, dump, Storage) and opd/engine/diffs.py (diff, Patch)."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

import pytest

from opd.engine.diffs import Patch, diff
from opd.engine.state import LAST_HANDLED, State, Storage, Writes, dump, essence
from opd.settings import PersistenceSettings


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge-patch: objects merge recursively, None deletes, anything else replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def apply(body: dict[str, Any], writes: Writes) -> dict[str, Any]:
    """What the API server holds after opd sends its two patches: status first, then the body."""
    return merge_patch(merge_patch(body, writes.status), writes.body)


def test_merge_patch_helper() -> None:
    # The helper itself, on the RFC 7386 appendix examples that matter here.
    assert merge_patch({"a": "b"}, {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": "b"}, {"b": "c"}) == {"a": "b", "b": "c"}
    assert merge_patch({"a": "b"}, {"a": None}) == {}
    assert merge_patch({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}) == {"a": {"b": "d"}}
    assert merge_patch({"a": [{"b": "c"}]}, {"a": [1]}) == {"a": [1]}
    assert merge_patch({}, {"a": {"bb": {"ccc": None}}}) == {"a": {"bb": {}}}
    assert merge_patch({"a": "foo"}, "bar") == "bar"


# --- essence -----------------------------------------------------------------------------------------

BODY: dict[str, Any] = {
    "apiVersion": "kopf.dev/v1",
    "kind": "KopfExample",
    "metadata": {
        "name": "x",
        "namespace": "ns",
        "uid": "123",
        "resourceVersion": "42",
        "generation": 3,
        "creationTimestamp": "2020-01-01T00:00:00Z",
        "managedFields": [{"manager": "kubectl"}],
        "finalizers": ["opd.dev/finalizer"],
        "labels": {"app": "web", "opd.dev/label": "kept"},
        "annotations": {
            "note": "kept",
            "example.com/thing": "kept",
            "opd.dev/last-handled-configuration": "{}",
            "opd.dev/create_fn": '{"success":true}',
            "sub.opd.dev/x": "dropped",
            "deep.sub.opd.dev/y": "dropped",
            "notopd.dev/z": "kept",
            "kubectl.kubernetes.io/last-applied-configuration": "{...}",
            "kubectl.kubernetes.io/restartedAt": "kept",
        },
    },
    "spec": {"field": 1, "nested": {"a": [1, 2]}},
    "data": {"key": "value"},
    "status": {"phase": "Running", "opd": {"lastHandled": "{}"}},
}


def test_essence_drops_system_fields() -> None:
    result = essence(BODY, "opd.dev")
    assert result == {
        "spec": {"field": 1, "nested": {"a": [1, 2]}},
        "data": {"key": "value"},
        "metadata": {
            # Labels are the user's, whatever their domain.
            "labels": {"app": "web", "opd.dev/label": "kept"},
            "annotations": {
                "note": "kept",
                "example.com/thing": "kept",
                "notopd.dev/z": "kept",
                "kubectl.kubernetes.io/restartedAt": "kept",
            },
        },
    }


def test_essence_custom_prefix() -> None:
    body = {"spec": {}, "metadata": {"annotations": {
        "my-op.example.com/last-handled-configuration": "{}",
        "my-op.example.com/fn": "{}",
        "other.example.com/fn": "kept",
        "opd.dev/ttl": "kept",  # the bare domain is left to users
        "x.opd.dev/fn": "dropped",  # a plugin's markers
    }}}
    assert essence(body, "my-op.example.com") == {"spec": {}, "metadata": {"annotations": {
        "other.example.com/fn": "kept", "opd.dev/ttl": "kept"}}}


def test_essence_without_metadata_to_keep() -> None:
    assert essence({"apiVersion": "v1", "kind": "X", "spec": {"a": 1}}, "opd.dev") == {"spec": {"a": 1}}
    only_ours = {"spec": {"a": 1}, "metadata": {"name": "x", "labels": {}, "annotations": {
        "opd.dev/last-handled-configuration": "{}",
        "kubectl.kubernetes.io/last-applied-configuration": "{}"}}}
    assert essence(only_ours, "opd.dev") == {"spec": {"a": 1}}
    assert essence({"metadata": None, "spec": 1}, "opd.dev") == {"spec": 1}


def test_essence_does_not_change_with_our_own_writes() -> None:
    before = copy.deepcopy(BODY)
    after = copy.deepcopy(BODY)
    after["metadata"]["annotations"]["opd.dev/last-handled-configuration"] = dump(essence(before, "opd.dev"))
    after["metadata"]["annotations"]["opd.dev/other_fn"] = '{"retries":1}'
    after["metadata"]["resourceVersion"] = "43"
    after["status"] = {"opd": {"progress": {"x": {}}}, "extra": 1}
    assert dump(essence(after, "opd.dev")) == dump(essence(before, "opd.dev"))
    assert before == BODY  # essence() does not mutate its input


def test_essence_changes_with_user_edits() -> None:
    base = dump(essence(BODY, "opd.dev"))
    for path, value in [(("spec", "field"), 2), (("metadata", "labels"), {"app": "db"}),
                        (("metadata", "annotations"), {"note": "changed"})]:
        body = copy.deepcopy(BODY)
        body[path[0]][path[1]] = value
        assert dump(essence(body, "opd.dev")) != base, path


# --- dump --------------------------------------------------------------------------------------------

def test_dump_is_canonical() -> None:
    a = {"b": 1, "a": {"d": [1, {"y": 2, "x": 1}], "c": "é"}}
    b = {"a": {"c": "é", "d": [1, {"x": 1, "y": 2}]}, "b": 1}
    assert dump(a) == dump(b)
    assert dump(a) == '{"a":{"c":"\\u00e9","d":[1,{"x":1,"y":2}]},"b":1}'
    assert json.loads(dump(a)) == a


def test_dump_keeps_list_order() -> None:
    assert dump([2, 1]) != dump([1, 2])


# --- Storage -----------------------------------------------------------------------------------------

def _storage(mode: str, *, subresource: bool = True, prefix: str = "opd.dev") -> Storage:
    return Storage(PersistenceSettings(prefix=prefix, storage=mode), has_status_subresource=subresource)


def _object() -> dict[str, Any]:
    return {"apiVersion": "kopf.dev/v1", "kind": "KopfExample",
            "metadata": {"name": "x", "namespace": "ns", "annotations": {"note": "user"}},
            "spec": {"field": 1}}


def _write(storage: Storage, body: dict[str, Any], *, diff_base: str | None,
           progress: Mapping[str, dict[str, Any] | None]) -> tuple[dict[str, Any], Writes]:
    writes = Writes()
    storage.write(writes, old=storage.read(body), diff_base=diff_base, progress=progress)
    return apply(body, writes), writes


def test_storage_mode_selection() -> None:
    assert _storage("auto", subresource=True).in_status is True
    assert _storage("auto", subresource=False).in_status is False
    assert _storage("annotations", subresource=True).in_status is False
    assert _storage("status", subresource=False).in_status is True
    storage = _storage("auto", subresource=True)
    storage.fall_back_to_annotations()
    assert storage.in_status is False


@pytest.mark.parametrize("mode", ["status", "annotations"])
def test_storage_read_empty(mode: str) -> None:
    assert _storage(mode).read(_object()) == State(None, {})
    assert _storage(mode).read({"metadata": {}}) == State(None, {})


def test_storage_status_mode_writes_to_status() -> None:
    storage = _storage("status")
    writes = Writes()
    storage.write(writes, old=State(None, {}), diff_base="BASE", progress={"fn": {"retries": 1}})
    assert writes.body == {}
    assert writes.status == {"status": {"opd": {"lastHandled": "BASE", "progress": {"fn": {"retries": 1}}}}}


def test_storage_annotation_mode_writes_annotations() -> None:
    storage = _storage("annotations")
    writes = Writes()
    storage.write(writes, old=State(None, {}), diff_base="BASE", progress={"fn": {"retries": 1}})
    assert writes.status == {}
    assert writes.body == {"metadata": {"annotations": {
        f"opd.dev/{LAST_HANDLED}": "BASE",
        "opd.dev/fn": '{"retries":1}',
    }}}


def test_storage_custom_prefix_and_field() -> None:
    settings = PersistenceSettings(prefix="my.example.com", storage="annotations", status_field="mine")
    storage = Storage(settings, has_status_subresource=True)
    body, writes = _write(storage, _object(), diff_base="B", progress={"fn": {"a": 1}})
    assert set(writes.body["metadata"]["annotations"]) == {f"my.example.com/{LAST_HANDLED}", "my.example.com/fn"}
    assert storage.read(body) == State("B", {"fn": {"a": 1}})
    status = Storage(PersistenceSettings(storage="status", status_field="mine"), has_status_subresource=True)
    _, writes = _write(status, _object(), diff_base="B", progress={})
    assert writes.status == {"status": {"mine": {"lastHandled": "B"}}}


@pytest.mark.parametrize("mode", ["status", "annotations"])
def test_storage_round_trip(mode: str) -> None:
    storage = _storage(mode)
    body = _object()

    # A first step: two handlers, one done, one to retry; no diff-base yet.
    progress1: dict[str, dict[str, Any] | None] = {
        "create_fn": {"started": 1.5, "success": True},
        "other_fn": {"started": 1.5, "retries": 1, "delayed": 100.0, "message": "boom"},
    }
    body, _ = _write(storage, body, diff_base=None, progress=progress1)
    assert storage.read(body) == State(None, progress1)

    # A second step: all done; the records are purged and the diff-base written.
    base = dump(essence(body, "opd.dev"))
    body, _ = _write(storage, body, diff_base=base, progress={"create_fn": None, "other_fn": None})
    assert storage.read(body) == State(base, {})
    # The user's annotation survives all of it, and the body kept its spec.
    assert body["metadata"]["annotations"]["note"] == "user"
    assert body["spec"] == {"field": 1}
    # What opd stored does not count as a change.
    assert dump(essence(body, "opd.dev")) == base


@pytest.mark.parametrize("mode", ["status", "annotations"])
def test_storage_record_is_replaced_not_merged(mode: str) -> None:
    # State.progress must be exactly what write() was given last: a key the new record no longer has
    # (here: "delayed", "message") must not survive from the old one.
    storage = _storage(mode)
    body, _ = _write(storage, _object(), diff_base=None,
                     progress={"fn": {"started": 1.0, "retries": 1, "delayed": 100.0, "message": "boom"}})
    body, _ = _write(storage, body, diff_base=None, progress={"fn": {"started": 1.0, "success": True}})
    assert storage.read(body).progress == {"fn": {"started": 1.0, "success": True}}


@pytest.mark.parametrize("mode", ["status", "annotations"])
def test_storage_purge_one_keeps_others(mode: str) -> None:
    storage = _storage(mode)
    body, _ = _write(storage, _object(), diff_base="B1", progress={"a": {"success": True}, "b": {"retries": 2}})
    body, _ = _write(storage, body, diff_base=None, progress={"a": None})
    assert storage.read(body) == State("B1", {"b": {"retries": 2}})


@pytest.mark.parametrize("mode", ["status", "annotations"])
def test_storage_unchanged_values_not_rewritten(mode: str) -> None:
    storage = _storage(mode)
    body, _ = _write(storage, _object(), diff_base="B1", progress={"a": {"success": True}, "b": {"retries": 2}})
    old = storage.read(body)

    writes = Writes()
    storage.write(writes, old=old, diff_base="B1", progress={"a": {"success": True}, "b": {"retries": 2}})
    assert writes.status == {} and writes.body == {}

    # Purging what is not there, or no diff-base at all: nothing to write either.
    writes = Writes()
    storage.write(writes, old=old, diff_base=None, progress={"never-stored": None})
    assert writes.status == {} and writes.body == {}

    # Only what changed is written.
    writes = Writes()
    storage.write(writes, old=old, diff_base="B2", progress={"a": {"success": True}, "b": {"retries": 3}})
    if mode == "status":
        assert writes.body == {}
        assert writes.status == {"status": {"opd": {"lastHandled": "B2", "progress": {"b": {"retries": 3}}}}}
    else:
        assert writes.status == {}
        assert writes.body == {"metadata": {"annotations": {
            f"opd.dev/{LAST_HANDLED}": "B2", "opd.dev/b": '{"retries":3}'}}}
    assert storage.read(apply(body, writes)) == State("B2", {"a": {"success": True}, "b": {"retries": 3}})


def test_storage_status_write_keeps_other_status_fields() -> None:
    storage = _storage("status")
    body = _object()
    body["status"] = {"phase": "Ready", "create_fn": {"result": 1}}
    body, _ = _write(storage, body, diff_base="B", progress={"a": {"success": True}})
    assert body["status"]["phase"] == "Ready"
    assert body["status"]["create_fn"] == {"result": 1}


def test_storage_writes_merge_with_results() -> None:
    storage = _storage("status")
    writes = Writes()
    writes.set_result("create_fn", {"answer": 42}, None)
    storage.write(writes, old=State(None, {}), diff_base="B", progress={})
    assert writes.status == {"status": {"create_fn": {"answer": 42}, "opd": {"lastHandled": "B"}}}


def test_storage_annotation_read_skips_foreign_and_bad_values() -> None:
    storage = _storage("annotations")
    body = {"metadata": {"annotations": {
        f"opd.dev/{LAST_HANDLED}": "BASE",
        "opd.dev/fn": '{"success":true}',
        "opd.dev/broken": "not json {",
        "other.dev/fn": '{"success":true}',
        "opd.dev.example.com/fn": '{"success":true}',
    }}}
    assert storage.read(body) == State("BASE", {"fn": {"success": True}})


def test_storage_status_mode_falls_back_to_annotations_on_read() -> None:
    # Markers written to annotations (after a structural schema pruned the status) are still read.
    storage = _storage("status")
    body = {"metadata": {"annotations": {f"opd.dev/{LAST_HANDLED}": "BASE", "opd.dev/fn": '{"retries":1}'}},
            "status": {"phase": "x"}}
    assert storage.read(body) == State("BASE", {"fn": {"retries": 1}})
    body["status"]["opd"] = {"lastHandled": "NEWER"}
    assert storage.read(body) == State("NEWER", {})


def test_storage_confirms() -> None:
    status = _storage("status")
    assert status.confirms({"status": {"opd": {"lastHandled": "B"}}}, "B") is True
    assert status.confirms({"status": {"opd": {"lastHandled": "A"}}}, "B") is False
    assert status.confirms({"status": {}}, "B") is False  # pruned by a structural schema
    assert status.confirms({}, "B") is False
    assert status.confirms({}, None) is True  # nothing to confirm
    annotations = _storage("annotations")
    assert annotations.confirms({}, "B") is True


def test_writes_helpers() -> None:
    writes = Writes()
    writes.set_result("a", 1, None)
    writes.set_result("b", {"x": 2}, "plugin")
    writes.set_annotation("k1", "v")
    writes.set_annotation("k2", None)
    assert writes.status == {"status": {"a": 1, "plugin": {"b": {"x": 2}}}}
    assert writes.body == {"metadata": {"annotations": {"k1": "v", "k2": None}}}


# --- diff --------------------------------------------------------------------------------------------

def test_diff_equal() -> None:
    assert diff({"a": 1}, {"a": 1}) == ()
    assert diff(None, None) == ()


def test_diff_paths() -> None:
    old = {"spec": {"size": 1, "gone": "x", "same": [1, 2], "nested": {"deep": 1}}, "top": 1}
    new = {"spec": {"size": 2, "added": "y", "same": [1, 2], "nested": {"deep": 2}}, "other": {"a": 1}}
    assert diff(old, new) == (
        ("add", ("other",), None, {"a": 1}),
        ("add", ("spec", "added"), None, "y"),
        ("remove", ("spec", "gone"), "x", None),
        ("change", ("spec", "nested", "deep"), 1, 2),
        ("change", ("spec", "size"), 1, 2),
        ("remove", ("top",), 1, None),
    )


def test_diff_whole_values() -> None:
    assert diff(None, {"a": 1}) == (("add", (), None, {"a": 1}),)
    assert diff({"a": 1}, None) == (("remove", (), {"a": 1}, None),)
    assert diff(1, 2) == (("change", (), 1, 2),)
    assert diff([1], [1, 2]) == (("change", (), [1], [1, 2]),)
    assert diff({"a": 1}, "x") == (("change", (), {"a": 1}, "x"),)


def test_diff_none_values_inside() -> None:
    assert diff({"a": None}, {"a": 1}) == (("add", ("a",), None, 1),)
    assert diff({"a": 1}, {"a": None}) == (("remove", ("a",), 1, None),)


def test_diff_of_essences() -> None:
    old = essence(BODY, "opd.dev")
    body = copy.deepcopy(BODY)
    body["spec"]["field"] = 5
    body["metadata"]["labels"]["new"] = "1"
    body["status"]["phase"] = "Failed"  # not in the essence
    assert diff(old, essence(body, "opd.dev")) == (
        ("add", ("metadata", "labels", "new"), None, "1"),
        ("change", ("spec", "field"), 1, 5),
    )


# --- Patch -------------------------------------------------------------------------------------------

def test_patch_creates_nested_dicts() -> None:
    patch = Patch()
    patch.metadata.labels["a"] = "b"
    assert patch == {"metadata": {"labels": {"a": "b"}}}
    patch.metadata.annotations["c"] = "d"
    patch.metadata.labels["e"] = "f"
    assert patch == {"metadata": {"labels": {"a": "b", "e": "f"}, "annotations": {"c": "d"}}}


def test_patch_status() -> None:
    patch = Patch()
    patch.status["phase"] = "Ready"
    patch.status["message"] = None
    assert patch["status"]["phase"] == "Ready"
    assert patch["status"]["message"] is None
    assert patch.pop("status")["phase"] == "Ready"
    assert patch == {}


def test_patch_is_a_plain_json_dict() -> None:
    patch = Patch()
    patch.spec["size"] = 2
    patch.metadata.labels["x"] = "y"
    assert json.loads(json.dumps(patch)) == {"spec": {"size": 2}, "metadata": {"labels": {"x": "y"}}}
    assert isinstance(patch, dict)


def test_patch_keeps_existing_values() -> None:
    patch = Patch()
    patch["metadata"] = {"labels": {"a": "1"}, "name": "x"}
    patch.metadata.labels["b"] = "2"
    assert patch == {"metadata": {"labels": {"a": "1", "b": "2"}, "name": "x"}}
    section = patch.metadata
    assert patch.metadata is section  # the same section on every access


def test_patch_private_attributes_are_not_sections() -> None:
    patch = Patch()
    with pytest.raises(AttributeError):
        patch._private  # noqa: B018
    assert copy.deepcopy(patch) == {}
    assert patch == {}
