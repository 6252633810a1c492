"""Plugin objects for the supervisor's tests (loaded through entry points made in the tests)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import opd

CALLS: list[tuple[str, str]] = []
FLAKY_STARTS: list[int] = []


class Recorder:
    """Records which plugin handled which object; its name comes from its config."""

    @opd.hookimpl
    def opd_register(self, registry: opd.OperatorRegistry, config: dict[str, Any]) -> None:
        label = config.get("label", "recorder")

        @opd.on.create("kopfexamples", registry=registry, id="record")
        def record(name: str, **_: Any) -> str:
            CALLS.append((label, name))
            return label


class Flaky:
    """Its operator crashes once at start (a failing startup handler), then runs."""

    @opd.hookimpl
    def opd_register(self, registry: opd.OperatorRegistry, config: dict[str, Any]) -> None:
        @opd.on.startup(registry=registry)
        def boot(**_: Any) -> None:
            FLAKY_STARTS.append(1)
            if len(FLAKY_STARTS) == 1:
                raise opd.PermanentError("first start fails")

        @opd.on.create("kopfexamples", registry=registry, id="record")
        def record(name: str, **_: Any) -> str:
            CALLS.append(("flaky", name))
            return "flaky"


recorder_a = Recorder()
recorder_b = Recorder()
flaky = Flaky()


class Checked:
    """Declares its options: a table that does not fit fails it at start, and only it."""

    @opd.hookimpl
    def opd_options(self) -> list[opd.Option]:
        return [opd.Option("interval", float, default=1.0)]

    @opd.hookimpl
    def opd_register(self, registry: opd.OperatorRegistry, config: dict[str, Any]) -> None:
        @opd.on.create("kopfexamples", registry=registry, id="record")
        def record(name: str, **_: Any) -> float:
            CALLS.append(("checked", name))
            return float(config["interval"])


class SharedLogin:
    """Brings its own login handler: refused unless it runs with isolation = "thread"."""

    @opd.hookimpl
    def opd_register(self, registry: opd.OperatorRegistry) -> None:
        @opd.on.login(registry=registry)
        def custom_login(**_: Any) -> None:
            return None

        @opd.on.create("kopfexamples", registry=registry, id="record")
        def record(name: str, **_: Any) -> str:
            CALLS.append(("login", name))
            return "login"


checked = Checked()
shared_login = SharedLogin()


class Gated:
    """One worker whose handler waits until ``GATE`` opens, and a small LIST page (its queue's room is
    two pages): a backlog that stays a backlog while the test looks at readiness."""

    GATE = threading.Event()
    HANDLED: list[str] = []

    @opd.hookimpl
    def opd_configure(self, settings: opd.OperatorSettings) -> None:
        settings.processing.workers = 1
        settings.watching.list_page_size = 10

    @opd.hookimpl
    def opd_register(self, registry: opd.OperatorRegistry) -> None:
        @opd.on.create("kopfexamples", registry=registry, id="gated")
        async def gated(name: str, **_: Any) -> None:
            await asyncio.to_thread(Gated.GATE.wait)  # a thread's Event: the test's loop may be another
            Gated.HANDLED.append(name)


gated = Gated()
