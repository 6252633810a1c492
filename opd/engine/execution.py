"""Running a handler once, and what that means for its progress record: success, a
retry at a later time, or a final failure.

Every kind of handler goes through here — change and delete handlers, timers,
daemons, event handlers, startup/cleanup/login — so ``errors=``, ``retries=``,
``backoff=``, ``timeout=`` and the ``retry``/``started``/``runtime`` kwargs mean the
same for all of them. A handler past its ``timeout`` (over all its tries) fails with
``HandlerTimeoutError``, one past its ``retries`` with ``HandlerRetriesError``; both
are permanent.
"""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from opd.engine import arguments
from opd.engine.backoff import Backoff
from opd.engine.invocation import NotStarted, Start, invoke
from opd.errors import HandlerRetriesError, HandlerTimeoutError, PermanentError, TemporaryError
from opd.registry import ErrorsMode, Handler
from opd.settings import RetrySettings

MAX_MESSAGE = 500  # characters of an error kept in a progress record (it lives on the object)


def api_answer(error: BaseException) -> str | None:
    """The API server's refusal of a handler's own call (kubernetes_asyncio's ApiException) as it says
    it, ``(403) Forbidden: pods is forbidden: ...``: the exception's own text puts headers first."""
    status, body = getattr(error, "status", None), getattr(error, "body", None)
    if not isinstance(status, int) or not isinstance(body, str | bytes):
        return None
    try:
        message = json.loads(body).get("message")
    except (ValueError, AttributeError):
        message = None
    head = f"({status}) {getattr(error, 'reason', '') or ''}".strip()
    return f"{head}: {message}" if message else head


def brief(error: BaseException | str, limit: int = MAX_MESSAGE) -> str:
    """An error as one line of at most ``limit`` characters."""
    text = " ".join(str(error).split()) if isinstance(error, str) else " ".join(
        (api_answer(error) or str(error) or type(error).__name__).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


@dataclass
class Outcome:
    record: dict[str, Any]  # the handler's new progress record
    result: Any = None
    error: BaseException | None = None
    delay: float | None = None  # set when it is to be retried

    @property
    def success(self) -> bool:
        return bool(self.record.get("success"))

    @property
    def final_failure(self) -> bool:
        return bool(self.record.get("failure"))


async def execute(handler: Handler, record: dict[str, Any], kwargs: dict[str, Any], *,
                  executor: Executor | None, retries: RetrySettings, start: Start | None = None) -> Outcome:
    """One try of ``handler``; ``record`` is its progress so far (``started``, ``retries``). ``start``
    is asked when it really starts (``invocation.Start``): a handler that did not start raises
    ``NotStarted``, it is no try of the handler's."""
    retry = int(record.get("retries") or 0)
    started = float(record["started"])
    runtime = time.time() - started
    try:
        if handler.timeout is not None and runtime >= handler.timeout:
            raise HandlerTimeoutError(f"timed out after {handler.timeout:g}s")
        remaining = None if handler.timeout is None else handler.timeout - runtime
        call = invoke(handler, arguments.tried(kwargs, retry=retry, started=started, runtime=runtime),
                      executor=executor, start=start)
        try:
            result = await asyncio.wait_for(call, remaining)
        except TimeoutError as exc:
            raise HandlerTimeoutError(f"timed out after {handler.timeout:g}s") from exc
    except (asyncio.CancelledError, NotStarted):
        raise
    except PermanentError as exc:
        return Outcome({**record, "failure": True, "message": brief(exc)}, error=exc)
    except Exception as exc:
        temporary = isinstance(exc, TemporaryError)
        if handler.errors == ErrorsMode.IGNORED and not temporary:
            return Outcome({**record, "success": True, "message": brief(exc)}, error=exc)
        if handler.errors == ErrorsMode.PERMANENT and not temporary:
            return Outcome({**record, "failure": True, "message": brief(exc)}, error=exc)
        if handler.retries is not None and retry + 1 >= handler.retries:
            error = HandlerRetriesError(f"{brief(exc)} (after {retry + 1} tries)")
            error.__cause__ = exc
            return Outcome({**record, "failure": True, "retries": retry + 1, "message": brief(error)}, error=error)
        if isinstance(exc, TemporaryError) and exc.delay is not None:
            delay = exc.delay
        elif handler.backoff is not None:
            delay = handler.backoff
        else:
            delay = Backoff(retries.backoff_initial, retries.backoff_max).delay(retry)
        return Outcome({**record, "retries": retry + 1, "delayed": time.time() + delay, "message": brief(exc)},
                       error=exc, delay=delay)
    return Outcome({**record, "success": True}, result=result)
