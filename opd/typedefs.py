"""Type names for handler signatures, spelled as Kopf spells them (``kopf.Spec`` → ``opd.Spec``).

They describe what opd hands to handlers, for annotations and type checkers; none of them
changes what a handler gets. opd hands plain dicts (``body``, ``spec``, ``meta``...), where
Kopf hands read-only views of the same data: code that reads them works unchanged.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypedDict

from loguru import logger as _logger

if TYPE_CHECKING:
    from loguru import Logger as Logger
else:
    Logger = type(_logger)  # a handler's ``logger``: loguru's, bound to the object (namespace/name)

# -- an object and its parts (as in a handler's ``body``, ``spec``, ``meta``...) -------------------------------------
RawBody: TypeAlias = MutableMapping[str, Any]  # an object as the API sends it
Body: TypeAlias = Mapping[str, Any]
BodyEssence: TypeAlias = Mapping[str, Any]  # what the diff-base keeps: spec, labels, annotations
Spec: TypeAlias = Mapping[str, Any]
Meta: TypeAlias = Mapping[str, Any]
Status: TypeAlias = Mapping[str, Any]
Labels: TypeAlias = Mapping[str, str]
Annotations: TypeAlias = Mapping[str, str]

RawEventType = Literal[None, "ADDED", "MODIFIED", "DELETED"]


class RawEvent(TypedDict):
    """An event handler's ``event``: the watch event's type and the object."""

    type: RawEventType
    object: RawBody


class OwnerReference(TypedDict, total=False):
    apiVersion: str
    kind: str
    name: str
    uid: str
    controller: bool
    blockOwnerDeletion: bool


class ObjectReference(TypedDict, total=False):
    apiVersion: str
    kind: str
    name: str
    uid: str
    namespace: str | None


# -- diffs (``old``/``new``/``diff`` of update and field handlers) ---------------------------------------------------
class DiffOperation(enum.StrEnum):
    ADD = "add"
    CHANGE = "change"
    REMOVE = "remove"


FieldPath: TypeAlias = tuple[str, ...]
FieldSpec: TypeAlias = str | Sequence[str]  # 'spec.field' or ('spec', 'field'), as field= takes it
DiffItem: TypeAlias = tuple[str, FieldPath, Any, Any]  # (operation, field path, old, new)
Diff: TypeAlias = Sequence[DiffItem]

HandlerId: TypeAlias = str


class DaemonStoppingReason(enum.StrEnum):
    """Why a daemon's ``stopped`` is set: ``stopped.reason`` equals one of these."""

    FILTERS_MISMATCH = "filters no longer match"
    RESOURCE_DELETED = "object deleted"
    OPERATOR_EXITING = "operator stopping"
    OPERATOR_PAUSING = "no longer this replica's"  # another replica took the object (Leases; Kopf: peering)


# -- admission webhooks (handlers' ``headers``, ``sslpeer``, ``userinfo``) -----------------------------------------
Headers: TypeAlias = Mapping[str, str]
SSLPeer: TypeAlias = Mapping[str, Any]


class UserInfo(TypedDict, total=False):
    username: str
    uid: str
    groups: list[str]

