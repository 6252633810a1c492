"""ConversionReview in, ConversionReview out (``apiextensions.k8s.io/v1``): a custom resource's
objects from the version they are stored or sent in to the version asked for.

Converters go one step (``on.convert(from_version=, to_version=)``); a conversion takes the
shortest chain of them, so a hub version needs two converters per other version, not one per
pair. Whatever a converter returns, the object keeps its kind and its metadata, but for the
labels and annotations the returned object has (the API server refuses any other change), and
gets the step's apiVersion.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from opd.engine.execution import brief
from opd.errors import WebhookError
from opd.registry import WebhookHandler
from opd.webhooks import bodies

API_VERSION = "apiextensions.k8s.io/v1"
# Runs one converter with the object it converts (the caller adds the operator's kwargs).
Run = Callable[[WebhookHandler, dict[str, Any]], Awaitable[Any]]


class ConversionFailed(Exception):
    """A conversion that cannot be done: said to the API server, which fails the client's request."""


def read(review: Mapping[str, Any]) -> tuple[str, str, list[dict[str, Any]]]:
    """(uid, desiredAPIVersion, objects) of a ConversionReview, its shape checked; WebhookError
    (400) saying which field is missing or of the wrong type."""
    where = "ConversionReview"
    request = bodies.field(dict(review), "request", dict, where, required=True)
    where += ".request"
    uid = bodies.field(request, "uid", str, where, required=True)
    desired = bodies.field(request, "desiredAPIVersion", str, where, required=True)
    objects = bodies.field(request, "objects", list, where) or []
    for n, obj in enumerate(objects):
        if not isinstance(obj, dict):
            raise WebhookError(f"{where}.objects[{n}]: expected an object")
        for key in ("apiVersion", "kind"):
            bodies.field(obj, key, str, f"{where}.objects[{n}]")
        bodies.metadata(obj, f"{where}.objects[{n}]")
    return uid, desired, objects


def version_of(api_version: str) -> str:
    return api_version.rpartition("/")[2]


def chain(converters: Sequence[WebhookHandler], source: str, target: str) -> list[WebhookHandler] | None:
    """The shortest sequence of converters from ``source`` to ``target`` (the first registered
    wins among equals); [] when they are the same version; None when there is no way."""
    if source == target:
        return []
    came: dict[str, WebhookHandler | None] = {source: None}
    queue = deque([source])
    while queue:
        here = queue.popleft()
        for step in converters:
            if step.from_version == here and step.to_version is not None and step.to_version not in came:
                came[step.to_version] = step
                if step.to_version == target:
                    path: list[WebhookHandler] = []
                    at: str | None = target
                    while at is not None and (back := came[at]) is not None:
                        path.append(back)
                        at = back.from_version
                    return path[::-1]
                queue.append(step.to_version)
    return None


async def convert(obj: Mapping[str, Any], desired: str, converters: Sequence[WebhookHandler], run: Run,
                  ) -> dict[str, Any]:
    """One object in the ``desired`` apiVersion; ConversionFailed says why not."""
    group = desired.rpartition("/")[0]
    source, target = version_of(str(obj.get("apiVersion", ""))), version_of(desired)
    steps = chain(converters, source, target)
    if steps is None:
        raise ConversionFailed(f"no converter from {source} to {target} for {obj.get('kind', 'objects')}"
                               f" (opd has: {', '.join(f'{c.from_version}->{c.to_version}' for c in converters)})")
    body: dict[str, Any] = copy.deepcopy(dict(obj))
    for step in steps:
        try:
            result = await run(step, body)
        except Exception as exc:
            raise ConversionFailed(f"converter {step.id!r} failed: {brief(exc)}") from exc
        if result is None:
            result = body  # changed in place
        if not isinstance(result, Mapping):
            raise ConversionFailed(f"converter {step.id!r} returned {type(result).__name__}, not the object")
        body = copy.deepcopy(dict(result))
        if not isinstance(body.get("metadata", {}), Mapping):
            raise ConversionFailed(f"converter {step.id!r} returned an object whose metadata is not an object")
        body["apiVersion"] = f"{group}/{step.to_version}" if group else str(step.to_version)
    return _same_identity(obj, body, desired)


def _same_identity(original: Mapping[str, Any], converted: dict[str, Any], desired: str) -> dict[str, Any]:
    meta = copy.deepcopy(dict(original.get("metadata") or {}))
    new_meta = converted.get("metadata") or {}
    for key in ("labels", "annotations"):  # the converter's, when it says them; else the object's
        if key not in new_meta:
            continue
        if new_meta[key]:
            meta[key] = copy.deepcopy(new_meta[key])
        else:
            meta.pop(key, None)
    converted["metadata"] = meta
    converted["kind"] = original.get("kind")
    converted["apiVersion"] = desired
    return converted


async def answer(review: Mapping[str, Any], converters: Sequence[WebhookHandler], run: Run) -> dict[str, Any]:
    """Convert every object of the review, or fail it whole (the API server takes no partial answer)."""
    uid, desired, objects = read(review)
    try:
        converted = [await convert(obj, desired, converters, run) for obj in objects]
    except ConversionFailed as exc:
        return response(uid, message=str(exc))
    return response(uid, objects=converted)


def response(uid: str, *, objects: Sequence[Mapping[str, Any]] | None = None,
             message: str | None = None) -> dict[str, Any]:
    result: dict[str, Any] = {"status": "Success"} if message is None else {"status": "Failure", "message": message}
    payload: dict[str, Any] = {"uid": uid, "result": result}
    if message is None:
        payload["convertedObjects"] = list(objects or [])
    return {"apiVersion": API_VERSION, "kind": "ConversionReview", "response": payload}
