"""Saying what happened: one log line (naming the object) and one Kubernetes Event per handler
outcome, per refused or impossible write; nothing said twice for the same failure of an object."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loguru import logger

from opd.engine.events import EventPoster
from opd.engine.execution import Outcome, api_answer, brief
from opd.errors import HandlerError
from opd.registry import SPAWNING, Handler, Reason
from opd.resources import Resource


def where(body: Mapping[str, Any]) -> str:
    """``namespace/name``, or ``name`` for a cluster-scoped object."""
    meta = body.get("metadata") or {}
    return f"{meta['namespace']}/{meta.get('name')}" if meta.get("namespace") else str(meta.get("name"))


class Reporter:
    def __init__(self, resource: Resource, poster: EventPoster | None) -> None:
        self.resource = resource
        self.poster = poster

    def outcome(self, handler: Handler, body: Mapping[str, Any], outcome: Outcome) -> None:
        """One log line (with namespace/name) and one Kubernetes Event per outcome."""
        error, record, delay = outcome.error, outcome.record, outcome.delay
        log = logger.bind(object=where(body), resource=str(self.resource))
        kind_name = {Reason.TIMER: "timer", Reason.DAEMON: "daemon"}.get(handler.reason, "handler")
        name = f"{kind_name} {handler.id!r} for {where(body)}"
        if error is None:
            log.debug(f"opd: {name} succeeded")
            if self.poster is not None and handler.reason not in SPAWNING:
                self.poster.post(body, "Normal", "Handled", f"Handler {handler.id!r} succeeded.", level="info")
            return
        # The API server's answer to a handler's own call says it all (e.g. a 403: RBAC): one line.
        trace = None if isinstance(error, HandlerError | TimeoutError) or api_answer(error) else error
        text = f"{type(error).__name__}: {brief(error)}"
        if delay is not None:
            # An unexpected exception is an error even when retried; a TemporaryError is the plan.
            log.opt(exception=trace).log("ERROR" if trace else "WARNING",
                                         f"opd: {name} failed: {text}; retrying in {delay:g}s")
            kind, reason, level = "Warning", "Retrying", "warning"
        elif record.get("failure"):
            log.opt(exception=trace).error(f"opd: {name} failed permanently: {text}")
            kind, reason, level = "Warning", "Failed", "error"
        else:
            log.warning(f"opd: {name} failed (ignored): {text}")
            kind, reason, level = "Normal", "Ignored", "warning"
        if self.poster is not None:
            self.poster.post(body, kind, reason, f"Handler {handler.id!r}: {text}", level=level)

    def unwritable(self, body: Mapping[str, Any], exc: Exception) -> None:
        text = brief(exc)
        logger.error(f"opd: {self.resource} {where(body)}: the outcome cannot be written, not retried: {text}")
        if self.poster is not None:
            self.poster.post(body, "Warning", "Unwritable", f"opd cannot write its outcome: {text}", level="error")

    def write_failed(self, body: Mapping[str, Any], exc: Exception, *, refused: bool, delay: float, first: bool,
                     maximum: float) -> None:
        """The first failure of a kind at WARNING/ERROR (and an Event for a refusal); the same again at DEBUG."""
        text = brief(exc)
        if not first:
            logger.debug(f"opd: {self.resource} {where(body)}: writing failed again ({text}); retrying in {delay:.1f}s")
        elif refused:
            logger.error(f"opd: {self.resource} {where(body)}: writing the outcome was refused: {text}; "
                         f"retrying with backoff (at most every {maximum:g}s)")
            if self.poster is not None:
                self.poster.post(body, "Warning", "WriteRefused", f"opd's write was refused: {text}", level="error")
        else:
            logger.warning(f"opd: {self.resource} {where(body)}: writing the outcome failed ({text}); "
                           f"retrying in {delay:.1f}s")
