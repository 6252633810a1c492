"""Parents and children: owner references, names, namespaces and labels a child takes from its owner.

Each function takes one object or a list of them, and changes them in place: dicts (as you
would send them to the API), objects of the clients' generated models (kubernetes' and
kubernetes_asyncio's ``V1Pod`` and friends: anything with a ``metadata`` attribute), or
pykube-ng objects (their ``obj`` dict). Without ``owner=``, the owner is the object the
running handler was called for — so ``opd.adopt(child)`` inside a handler makes ``child`` its
object's child, as ``kopf.adopt(child)`` does.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from opd.engine.invocation import current_body
from opd.errors import OpdError
from opd.typedefs import ObjectReference, OwnerReference

# -- reading and writing one object, whatever its kind ----------------------------------------------------------


def _snake(name: str) -> str:
    """A model's attribute for an API field name: ``ownerReferences`` → ``owner_references``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _dict_of(obj: Any) -> MutableMapping[str, Any] | None:
    """The dict to edit for a dict or a pykube-ng object; None for a client's model object."""
    if isinstance(obj, MutableMapping):
        return obj
    inner = getattr(obj, "obj", None)  # pykube-ng keeps the object's dict here
    return inner if isinstance(inner, MutableMapping) else None


def _read(obj: Any, *path: str) -> Any:
    """A field of a dict, a pykube object or a model (API names: ``_read(o, 'metadata', 'name')``)."""
    node = obj
    for key in path:
        if node is None:
            return None
        as_dict = _dict_of(node) if not isinstance(node, Mapping) else node
        node = as_dict.get(key) if as_dict is not None else getattr(node, _snake(key), None)
    return node


def _model_class(model: Any, name: str) -> Any:
    """A class of the same client library the model comes from (``V1ObjectMeta``, ``V1OwnerReference``)."""
    package = type(model).__module__.split(".")[0]
    return getattr(importlib.import_module(f"{package}.client"), name)


class _Meta:
    """One object's metadata, read and written the same way for dicts and for model objects."""

    def __init__(self, obj: Any) -> None:
        data = _dict_of(obj)
        if data is not None:
            self.dict: MutableMapping[str, Any] | None = data.setdefault("metadata", {})
            self.model = None
        else:
            if not hasattr(obj, "metadata"):
                raise TypeError(f"expected a dict or an object of a client's model with metadata, "
                                f"got {type(obj).__name__}")
            if obj.metadata is None:
                obj.metadata = _model_class(obj, "V1ObjectMeta")()
            self.dict, self.model = None, obj.metadata

    def get(self, key: str) -> Any:
        if self.dict is not None:
            return self.dict.get(key)
        return getattr(self.model, _snake(key), None)

    def set(self, key: str, value: Any) -> None:
        if self.dict is not None:
            if value is None:
                self.dict.pop(key, None)
            else:
                self.dict[key] = value
        else:
            setattr(self.model, _snake(key), value)

    def owner_references(self) -> list[Any]:
        return list(self.get("ownerReferences") or [])

    def owner_uid(self, ref: Any) -> Any:
        return ref.get("uid") if isinstance(ref, Mapping) else getattr(ref, "uid", None)

    def make_owner_reference(self, ref: OwnerReference) -> Any:
        if self.model is None:
            return dict(ref)
        cls = _model_class(self.model, "V1OwnerReference")
        return cls(**{_snake(k): v for k, v in ref.items()})


def _objects(objs: Any) -> list[Any]:
    if isinstance(objs, Mapping) or _dict_of(objs) is not None or hasattr(objs, "metadata"):
        return [objs]
    if isinstance(objs, Iterable) and not isinstance(objs, str | bytes):
        return list(objs)
    raise TypeError(f"expected an object (a dict or a client's model) or a list of them, got {type(objs).__name__}")


def _owner(owner: Any, what: str) -> Any:
    if owner is not None:
        return owner
    found = current_body.get()
    if found is None:
        raise OpdError(f"opd.{what}: give owner= (outside a resource handler there is no object to take it from)")
    return found


# -- references ---------------------------------------------------------------------------------------------------


def build_object_reference(body: Any) -> ObjectReference:
    """A reference to the object (apiVersion, kind, name, uid; namespace if it has one)."""
    ref = ObjectReference(apiVersion=_read(body, "apiVersion"), kind=_read(body, "kind"),
                          name=_read(body, "metadata", "name"), uid=_read(body, "metadata", "uid"))
    namespace = _read(body, "metadata", "namespace")
    if namespace:
        ref["namespace"] = namespace
    return ref


def build_owner_reference(body: Any, *, controller: bool | None = True,
                          block_owner_deletion: bool | None = True) -> OwnerReference:
    """An ``ownerReferences`` entry naming the object as the owner."""
    ref = OwnerReference(apiVersion=_read(body, "apiVersion"), kind=_read(body, "kind"),
                         name=_read(body, "metadata", "name"), uid=_read(body, "metadata", "uid"))
    missing = [k for k, v in ref.items() if not v]
    if missing:
        raise ValueError(f"the owner has no {', '.join(missing)}: an owner reference needs apiVersion, kind, "
                         "name and uid (an object read from the API has them)")
    if controller is not None:
        ref["controller"] = controller
    if block_owner_deletion is not None:
        ref["blockOwnerDeletion"] = block_owner_deletion
    return ref


def append_owner_reference(objs: Any, owner: Any = None, *, controller: bool | None = True,
                           block_owner_deletion: bool | None = True) -> None:
    """Make ``owner`` an owner of each object (once: an existing reference to it stays as it is)."""
    ref = build_owner_reference(_owner(owner, "append_owner_reference"), controller=controller,
                                block_owner_deletion=block_owner_deletion)
    for obj in _objects(objs):
        meta = _Meta(obj)
        refs = meta.owner_references()
        if not any(meta.owner_uid(r) == ref["uid"] for r in refs):
            meta.set("ownerReferences", [*refs, meta.make_owner_reference(ref)])


def remove_owner_reference(objs: Any, owner: Any = None) -> None:
    """Remove ``owner`` from each object's owners (by its uid)."""
    uid = _read(_owner(owner, "remove_owner_reference"), "metadata", "uid")
    for obj in _objects(objs):
        meta = _Meta(obj)
        refs = meta.owner_references()
        kept = [r for r in refs if meta.owner_uid(r) != uid]
        if len(kept) != len(refs):
            meta.set("ownerReferences", kept)


# -- what a child takes from its owner -------------------------------------------------------------------------------


def label(objs: Any, labels: Mapping[str, str] | None = None, *, forced: bool = False,
          nested: str | Iterable[str] | None = None) -> None:
    """Put ``labels`` (default: the owner's) on each object, and on the nested objects at the
    ``nested`` paths that exist (e.g. ``'spec.template'``: a Deployment's pods). Labels already
    there keep their values unless ``forced``."""
    if labels is None:
        labels = _read(_owner(None, "label"), "metadata", "labels") or {}
    paths = [nested] if isinstance(nested, str) else list(nested or ())
    for obj in _objects(objs):
        targets = [obj] + [t for t in (_read(obj, *p.split(".")) for p in paths) if t is not None]
        for target in targets:
            meta = _Meta(target)
            current = dict(meta.get("labels") or {})
            for key, value in labels.items():
                if forced or key not in current:
                    current[key] = value
            meta.set("labels", current)


def harmonize_naming(objs: Any, name: str | None = None, *, forced: bool = False, strict: bool = False) -> None:
    """Name each unnamed object after ``name`` (default: the owner's): ``generateName: <name>-``,
    or with ``strict`` the name itself. A name or generateName already there stays unless ``forced``."""
    if name is None:
        name = _read(_owner(None, "harmonize_naming"), "metadata", "name")
    if not name:
        raise ValueError("opd.harmonize_naming: no name to give (the owner has none)")
    for obj in _objects(objs):
        meta = _Meta(obj)
        if (meta.get("name") or meta.get("generateName")) and not forced:
            continue
        if strict:
            meta.set("generateName", None)
            meta.set("name", name)
        else:
            meta.set("name", None)
            meta.set("generateName", f"{name}-")


def adjust_namespace(objs: Any, namespace: str | None = None, *, forced: bool = False) -> None:
    """Put each object in ``namespace`` (default: the owner's; a cluster-scoped owner gives none,
    and the objects stay as they are). A namespace already set stays unless ``forced``."""
    if namespace is None:
        namespace = _read(_owner(None, "adjust_namespace"), "metadata", "namespace")
    if not namespace:
        return
    for obj in _objects(objs):
        meta = _Meta(obj)
        if forced or not meta.get("namespace"):
            meta.set("namespace", namespace)


def adopt(objs: Any, owner: Any = None, *, forced: bool = False, strict: bool = False,
          nested: str | Iterable[str] | None = None) -> None:
    """Make each object the owner's child: its owner reference (the controller, blocking the owner's
    deletion until the child is gone), its namespace, a name after it, and its labels (also at
    the ``nested`` paths). Deleting the owner then deletes the children (Kubernetes' garbage collector)."""
    owner = _owner(owner, "adopt")
    append_owner_reference(objs, owner)
    harmonize_naming(objs, _read(owner, "metadata", "name"), forced=forced, strict=strict)
    namespace = _read(owner, "metadata", "namespace")
    if namespace:  # a cluster-scoped owner leaves its children's namespaces as they are
        adjust_namespace(objs, namespace, forced=forced)
    label(objs, _read(owner, "metadata", "labels") or {}, forced=forced, nested=nested)
