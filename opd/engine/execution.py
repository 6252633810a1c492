"""Running one change handler once, and what that means for its progress record:
success, a retry at a later time, or a final failure."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from opd.engine.invocation import invoke
from opd.errors import PermanentError, TemporaryError
from opd.registry import ErrorsMode, Handler
from opd.settings import RetrySettings


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
                  executor: Executor | None, retries: RetrySettings) -> Outcome:
    retry = int(record.get("retries") or 0)
    started = float(record["started"])
    runtime = time.time() - started
    try:
        if handler.timeout is not None and runtime >= handler.timeout:
            raise PermanentError(f"timed out after {handler.timeout}s")
        remaining = None if handler.timeout is None else handler.timeout - runtime
        call = invoke(handler, {**kwargs, "retry": retry, "started": started, "runtime": runtime},
                      executor=executor)
        result = await asyncio.wait_for(call, remaining)
    except asyncio.CancelledError:
        raise
    except PermanentError as exc:
        return Outcome({**record, "failure": True, "message": str(exc)}, error=exc)
    except TimeoutError as exc:
        return Outcome({**record, "failure": True, "message": f"timed out after {handler.timeout}s"}, error=exc)
    except Exception as exc:
        temporary = isinstance(exc, TemporaryError)
        if handler.errors == ErrorsMode.IGNORED and not temporary:
            return Outcome({**record, "success": True, "message": str(exc)}, error=exc)
        if handler.errors == ErrorsMode.PERMANENT and not temporary:
            return Outcome({**record, "failure": True, "message": str(exc)}, error=exc)
        if handler.retries is not None and retry + 1 >= handler.retries:
            return Outcome({**record, "failure": True, "retries": retry + 1,
                            "message": f"{exc} (after {retry + 1} tries)"}, error=exc)
        if isinstance(exc, TemporaryError) and exc.delay is not None:
            delay = exc.delay
        elif handler.backoff is not None:
            delay = handler.backoff
        else:
            delay = min(retries.backoff_max, retries.backoff_initial * 2 ** retry)
        return Outcome({**record, "retries": retry + 1, "delayed": time.time() + delay, "message": str(exc)},
                       error=exc, delay=delay)
    return Outcome({**record, "success": True}, result=result)
