"""AdmissionReview in, AdmissionReview out: which handlers a request is for, their kwargs, and the
response the API server expects (``admission.k8s.io/v1``; ``v1beta1`` has the same shape).

A refusal carries its message and HTTP code to the client (``opd.AdmissionError(message, code=)``;
any other exception refuses with 500 and its message). Warnings appended to ``warnings`` reach the
client as ``Warning:`` headers. A mutating handler's ``patch`` (a merge-patch, as everywhere in
opd) is sent as the JSON Patch the API server applies.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opd.engine import arguments
from opd.engine.diffs import Patch, diff
from opd.engine.execution import brief
from opd.errors import AdmissionError, PermanentError, TemporaryError, WebhookError
from opd.registry import Reason, WebhookHandler, matches
from opd.resources import Resource
from opd.typedefs import Diff
from opd.webhooks import bodies

DEFAULT_API_VERSION = "admission.k8s.io/v1"
Run = Callable[[WebhookHandler, dict[str, Any]], Awaitable[Any]]  # runs one handler with its kwargs


@dataclass(frozen=True)
class Request:
    """What an AdmissionReview asks, read once."""

    uid: str
    api_version: str
    group: str
    version: str
    plural: str
    kind: str
    operation: str
    subresource: str | None
    name: str | None
    namespace: str | None
    new: dict[str, Any] | None
    old: dict[str, Any] | None
    dryrun: bool
    userinfo: Mapping[str, Any] = field(default_factory=dict)

    @property
    def body(self) -> dict[str, Any]:
        """The object under review: the new one, or the old one when deleting."""
        return self.new if self.new is not None else (self.old or {})

    @property
    def where(self) -> str:
        name = self.name or (self.body.get("metadata") or {}).get("name") or "(no name yet)"
        return f"{self.namespace}/{name}" if self.namespace else name


def read(review: Mapping[str, Any]) -> Request:
    """The request of an AdmissionReview, its shape checked; WebhookError (400) saying which field
    is missing or of the wrong type. The API server sends every field read here as checked; a
    review from anyone else is refused before a handler sees it."""
    review = dict(review)
    where = "AdmissionReview"
    request = bodies.field(review, "request", dict, where, required=True)
    api_version = bodies.field(review, "apiVersion", str, where)
    where += ".request"
    uid = bodies.field(request, "uid", str, where, required=True)
    resource = bodies.field(request, "resource", dict, where, required=True)
    plural = bodies.field(resource, "resource", str, f"{where}.resource", required=True)
    group, version = (bodies.field(resource, k, str, f"{where}.resource") for k in ("group", "version"))
    kind = bodies.field(request, "kind", dict, where) or {}
    kind_name = bodies.field(kind, "kind", str, f"{where}.kind")
    operation = bodies.field(request, "operation", str, where, required=True)
    subresource, name, namespace = (bodies.field(request, k, str, where) for k in ("subResource", "name", "namespace"))
    new, old = bodies.field(request, "object", dict, where), bodies.field(request, "oldObject", dict, where)
    if new is None and old is None:
        raise WebhookError(f"{where}: neither object nor oldObject: nothing to review")
    for key, obj in (("object", new), ("oldObject", old)):
        if obj is not None:
            bodies.metadata(obj, f"{where}.{key}")
    dryrun = bodies.field(request, "dryRun", bool, where)
    userinfo = bodies.field(request, "userInfo", dict, where) or {}
    return Request(
        uid=uid, api_version=api_version or DEFAULT_API_VERSION, group=group or "", version=version or "",
        plural=plural, kind=kind_name or "", operation=operation, subresource=subresource or None,
        name=name or None, namespace=namespace or None, new=new, old=old, dryrun=bool(dryrun), userinfo=userinfo,
    )


def applies(handler: WebhookHandler, request: Request, resolved: Resource | None) -> bool:
    """Whether the handler is for this request's resource, operation and subresource (its object
    filters come later, with its kwargs)."""
    if resolved is not None:
        if (resolved.group, resolved.plural) != (request.group, request.plural):
            return False
    elif handler.resource is None or not handler.resource.matches(Resource(
            group=request.group, version=request.version, plural=request.plural, kind=request.kind,
            namespaced=request.namespace is not None)):
        return False
    if handler.operations is not None and request.operation not in handler.operations:
        return False
    if handler.subresource == "*":
        return request.subresource is not None
    return handler.subresource == request.subresource


def kwargs_for(request: Request, *, headers: Mapping[str, str] | None, sslpeer: Mapping[str, Any] | None,
               warnings: list[str], patch: Patch, operator: arguments.Operator | None = None, resource: Any = None,
               logger: Any = None) -> dict[str, Any]:
    """The kwargs every admission handler of a review gets (``arguments.admission``); with the operator's
    own (``operator``: memo, settings, api) and the ``resource`` and ``logger`` when it serves the review."""
    return arguments.admission(operator, request, diff=Diff(diff(request.old, request.new)), headers=headers,
                               sslpeer=sslpeer, warnings=warnings, patch=patch, resource=resource, logger=logger)


def _rank(error: BaseException) -> int:
    """Which refusal the client sees when several handlers refuse: the most deliberate one."""
    if isinstance(error, AdmissionError):
        return 0
    if isinstance(error, PermanentError):
        return 1
    return 2 if isinstance(error, TemporaryError) else 3


async def answer(review: Mapping[str, Any], request: Request, handlers: Sequence[WebhookHandler],
                 kwargs: dict[str, Any], run: Run) -> dict[str, Any]:
    """Run the handlers whose object filters match (in order, all of them: every warning is
    said), and build the response: the first refusal by rank, the warnings, the mutation."""
    errors: list[tuple[WebhookHandler, BaseException]] = []
    mutated = False
    for handler in handlers:
        own = arguments.admitting(kwargs, reason=str(handler.reason), param=handler.param)
        try:
            if not matches(handler, request.body, own):
                continue
            await run(handler, own)
        except Exception as exc:  # a refusal, deliberate or not
            errors.append((handler, exc))
        else:
            mutated = mutated or handler.reason == Reason.MUTATE
    warnings: list[str] = [" ".join(str(w).split()) for w in kwargs["warnings"]]
    if errors:
        handler, error = min(errors, key=lambda pair: _rank(pair[1]))
        code = error.code if isinstance(error, AdmissionError) and error.code else 500
        message = brief(error)  # one line, an API error as the API server said it (no headers)
        return response(review, request, allowed=False, warnings=warnings, code=code, message=message)
    try:
        ops = json_patch(request.body, kwargs["patch"]) if mutated else []
    except (TypeError, ValueError) as exc:  # a set, NaN: the handler's mistake, said to its client
        return response(review, request, allowed=False, warnings=warnings, code=500,
                        message=f"the mutation has no JSON form: {brief(exc)}")
    return response(review, request, allowed=True, warnings=warnings, patch=ops)


def response(review: Mapping[str, Any], request: Request, *, allowed: bool, warnings: Sequence[str] = (),
             patch: Sequence[Mapping[str, Any]] = (), code: int | None = None,
             message: str | None = None) -> dict[str, Any]:
    """An AdmissionReview response in the version it was asked in."""
    payload: dict[str, Any] = {"uid": request.uid, "allowed": allowed}
    if warnings:
        payload["warnings"] = list(warnings)
    if patch and allowed:
        payload["patchType"] = "JSONPatch"
        payload["patch"] = base64.b64encode(json.dumps(list(patch)).encode()).decode("ascii")
    if not allowed:
        payload["status"] = {"code": code or 500, "message": message or "refused"}
    return {"apiVersion": request.api_version, "kind": review.get("kind") or "AdmissionReview", "response": payload}


# -- merge-patch -> JSON Patch -------------------------------------------------------------------------------------


def pointer(path: Sequence[str]) -> str:
    """A JSON Pointer (RFC 6901)."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _without_nulls(value: Any) -> Any:
    """A merge-patch value as the object will hold it: nulls inside new objects add nothing."""
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return copy.deepcopy(value)


def json_patch(original: Any, merge: Mapping[str, Any], path: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The JSON Patch operations that do to ``original`` what the merge-patch ``merge`` does
    (RFC 7386: null removes a key, objects merge, anything else replaces). Raises TypeError
    (ValueError for NaN) when a value has no JSON form."""
    ops: list[dict[str, Any]] = []
    for key, value in merge.items():
        here = (*path, str(key))
        present = isinstance(original, Mapping) and key in original
        if value is None:
            if present:
                ops.append({"op": "remove", "path": pointer(here)})
        elif isinstance(value, Mapping) and present and isinstance(original[key], Mapping):
            ops.extend(json_patch(original[key], value, here))
        else:
            plain = _without_nulls(value)
            json.dumps(plain, allow_nan=False)  # fails here, for this handler's request, not in the response
            ops.append({"op": "replace" if present else "add", "path": pointer(here), "value": plain})
    return ops
