"""A webhook request's body, bounded before it is trusted: its size while it streams in, its
decoding (JSON only, UTF-8, no lone surrogates, nesting at most ``MAX_DEPTH`` deep) and where that
decoding runs (a thread, for a body large enough to hold the event loop up).

What the API server sends is plain JSON of a few KiB (an object and its old version); its own
request bodies are capped at 3 MiB, so ``MAX_BODY`` leaves room without letting one request
grow the process by more than a bounded amount.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import orjson

from opd.errors import WebhookError

MAX_BODY = 4 * 1024 * 1024  # bytes: above the API server's own 3 MiB cap on the objects it sends
MAX_DEPTH = 100  # levels of nesting: handlers (diffs, deep copies) recurse through them
OFF_LOOP = 64 * 1024  # bytes: a body at least this large is decoded in a thread


class BadBody(Exception):
    """A body opd does not read: ``status`` is the HTTP answer, the message one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Chunks(Protocol):
    """What a body is read from (aiohttp's ``StreamReader``)."""

    async def readany(self) -> bytes: ...


async def read(stream: Chunks, limit: int = MAX_BODY) -> bytes:
    """The whole body, refused (413) as soon as more than ``limit`` bytes came: a body without
    Content-Length (chunked) is never held past the limit."""
    parts: list[bytes] = []
    size = 0
    while chunk := await stream.readany():
        size += len(chunk)
        if size > limit:
            raise BadBody(413, f"a request body over {limit} bytes: refused")
        parts.append(chunk)
    return b"".join(parts)


def depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """How deep ``value`` nests (without recursion), stopping once past ``limit``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def decode(body: bytes, *, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """A JSON object from ``body``; BadBody (400) with one line for anything else."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadBody(400, f"expected a JSON review: {' '.join(str(exc).split())[:200]}") from None
    if not isinstance(value, dict):
        raise BadBody(400, f"expected a JSON review (an object), got a JSON {type(value).__name__}")
    if depth(value, max_depth) > max_depth:
        raise BadBody(400, f"a review nested more than {max_depth} levels deep: refused")
    return value


async def decode_off_loop(body: bytes, *, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """``decode``, in a thread when the body is large: the event loop keeps answering meanwhile."""
    if len(body) < OFF_LOOP:
        return decode(body, max_depth=max_depth)
    return await asyncio.to_thread(decode, body, max_depth=max_depth)


# -- shapes: what a review's fields must be before opd reads them -------------------------------------------------


def field(parent: dict[str, Any], key: str, kinds: type | tuple[type, ...], where: str, *,
          required: bool = False) -> Any:
    """``parent[key]`` when it is one of ``kinds``; None when absent or null (an empty string too,
    when ``required``: then WebhookError); WebhookError naming the field when of another type."""
    value = parent.get(key)
    if value is None or (required and value == ""):
        if required:
            raise WebhookError(f"{where}.{key}: missing")
        return None
    wanted = kinds if isinstance(kinds, tuple) else (kinds,)
    if not isinstance(value, wanted) or (isinstance(value, bool) and bool not in wanted):
        names = " or ".join(_NAMES.get(k, k.__name__) for k in wanted)
        raise WebhookError(f"{where}.{key}: expected {names}, got {_NAMES.get(type(value), type(value).__name__)}")
    return value


def metadata(obj: dict[str, Any], where: str) -> None:
    """An object's metadata as the API server gives it: an object whose names are strings and
    whose labels and annotations map strings to strings."""
    meta = field(obj, "metadata", dict, where)
    if meta is None:
        return
    for key in ("name", "namespace", "uid", "generateName"):
        field(meta, key, str, f"{where}.metadata")
    for key in ("labels", "annotations"):
        pairs = field(meta, key, dict, f"{where}.metadata")
        if pairs and not all(isinstance(v, str) for v in pairs.values()):
            raise WebhookError(f"{where}.metadata.{key}: expected strings as values")


_NAMES: dict[type, str] = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
                           float: "a number"}
