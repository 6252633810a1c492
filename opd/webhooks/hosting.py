"""One operator's webhooks: a service of its Operation (``opd.engine.operation.Service``).

Started after the operator's startup handlers (which may set ``settings.admission``), before it
counts as ready: its server listens and, when managed, the cluster's configurations point at it.
While it runs it keeps them current: again whenever the server gives a new client configuration,
every minute (a configuration someone deleted or edited comes back), and every 10 s while a
handler's resource is not served yet (a CRD installed later) or a write failed. At stop, first
thing, its non-persistent admission webhooks are taken out of the configurations, while the
server still answers; then the server stops. A CRD's conversion stays pointed at opd: without a
webhook, the API server would relabel stored objects without converting them.

The webhook paths under the operator's mount: ``validate/<id>``, ``mutate/<id>``, ``convert/<crd>``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from loguru import logger

from opd.engine import arguments
from opd.engine.diffs import Patch
from opd.engine.execution import brief
from opd.engine.invocation import invoke
from opd.errors import ConfigError, HandlerTimeoutError, WebhookError
from opd.kube.api import REQUEST_ERRORS, KubeClient
from opd.registry import Reason, WebhookHandler
from opd.resources import Resource
from opd.typedefs import LocalObjectLogger
from opd.webhooks import admission, conversion, management
from opd.webhooks.server import ClientConfig
from opd.webhooks.variants import WebhookAutoServer

if TYPE_CHECKING:
    from opd.engine.operation import Operation

RECONCILE_INTERVAL = 60.0  # seconds between checks that the cluster's configurations are still ours
RETRY_INTERVAL = 10.0  # seconds, while something could not be resolved or written
DEFAULT_TIMEOUT = management.DEFAULT_TIMEOUT
MAX_LOG_LINE = 1000  # characters of a line about one review: its names come from the requester


class Webhooks:
    """The admission handlers and converters of one operator, served and kept configured.

    ``server`` replaces ``settings.admission.server`` (the daemon gives each plugin its mount on the
    shared server); ``owner`` goes into the names of its webhooks, ``<id>.<owner>.<managed>`` (a
    plugin's name, so that plugins share one configuration); ``managed`` is the configuration's
    name when ``settings.admission.managed`` does not say one.
    """

    def __init__(self, *, server: Any = None, owner: str | None = None, managed: str | None = None,
                 excluded: Sequence[str] | None = None) -> None:
        self._server = server
        self._owner = owner
        self._managed = managed
        self._excluded_namespaces = excluded  # None: the operation's settings.admission.excluded_namespaces
        self.handlers: list[WebhookHandler] = []
        self.resolved: dict[WebhookHandler, Resource] = {}
        self.client_config: ClientConfig | None = None
        self.applied = asyncio.Event()  # the configurations were written once (for tests and readiness)
        self._operation: Operation | None = None
        self._configs: AsyncIterator[ClientConfig] | None = None
        self._pump: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._executor: ThreadPoolExecutor | None = None
        self._troubled = False  # something unresolved or unwritten: look again soon
        self._said: set[str] = set()  # troubles said once until they heal

    # -- the service --------------------------------------------------------------------------------------------

    async def start(self, operation: Operation) -> None:
        self._operation = operation
        self.handlers = operation.registry.webhooks()
        if not self.handlers:
            return
        management.check_webhooks(self.handlers)
        settings = operation.settings
        managed = settings.admission.managed or self._managed
        if managed and self.admission_handlers:
            management.check_name(managed)
        server = self._server if self._server is not None else settings.admission.server
        if self._server is not None and settings.admission.server is not None:
            logger.info(f"opd: settings.admission.server {settings.admission.server!r} is not used: "
                        f"the daemon's one server ([webhooks]) serves every plugin's webhooks")
        if server is None:
            kinds = sorted({f"on.{h.reason}" for h in self.handlers})
            raise ConfigError(f"{', '.join(kinds)} handlers need a server: set settings.admission.server in a "
                              "startup handler, e.g. settings.admission.server = opd.WebhookServer()")
        if isinstance(server, WebhookAutoServer):
            await server.detect(self._get)
        # Their own threads: a resource handler that runs for minutes must not keep the API server waiting.
        suffix = f"-{operation.name}" if operation.name else ""
        self._executor = ThreadPoolExecutor(settings.execution.max_workers, thread_name_prefix=f"opd-webhook{suffix}")
        self._configs = aiter(server(self.respond))
        try:
            self.client_config = await anext(self._configs)
        except StopAsyncIteration:
            raise ConfigError(f"settings.admission.server {server!r} ended before it said where it listens") from None
        await self._resolve()
        await self._apply()

    async def run(self) -> None:
        if self._configs is None:
            return
        self._pump = asyncio.get_running_loop().create_task(self._follow(), name="opd webhook server")
        try:
            while True:
                interval = RETRY_INTERVAL if self._troubled else RECONCILE_INTERVAL
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), interval)
                self._changed.clear()
                if self._pump.done():
                    self._pump.result()  # the server failed (raised) or ended: the operator stops with it
                    raise ConfigError("the webhook server stopped")
                await self._resolve()
                await self._apply()
        finally:
            if not self._pump.done():
                self._pump.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._pump

    async def _follow(self) -> None:
        """Every new client configuration the server gives (a tunnel's new address, say)."""
        assert self._configs is not None
        try:
            async for config in self._configs:
                self.client_config = config
                self._changed.set()
        finally:
            self._changed.set()  # run() sees that it ended

    async def stop(self) -> None:
        try:
            if self.client_config is not None and self.applied.is_set():
                await self._apply(stopping=True)
        finally:
            if self._pump is not None and not self._pump.done():
                self._pump.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._pump
            elif self._pump is None and self._configs is not None:
                aclose = getattr(self._configs, "aclose", None)
                if aclose is not None:  # never iterated by run(): close the server it started
                    with contextlib.suppress(Exception):
                        await aclose()
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)

    # -- who is who ---------------------------------------------------------------------------------------------

    @property
    def admission_handlers(self) -> list[WebhookHandler]:
        return [h for h in self.handlers if h.reason in (Reason.VALIDATE, Reason.MUTATE)]

    @property
    def converters(self) -> list[WebhookHandler]:
        return [h for h in self.handlers if h.reason == Reason.CONVERT]

    @property
    def client(self) -> KubeClient:
        assert self._operation is not None and self._operation.cluster is not None
        return self._operation.cluster.client

    async def _get(self, path: str, query: Mapping[str, str]) -> Any:
        return await self.client.request("GET", path, query=query)

    def _once(self, key: str, say: str) -> None:
        self._troubled = True
        if key not in self._said:
            self._said.add(key)
            logger.error(f"opd: {say}")

    def _healed(self, key: str, say: str | None = None) -> None:
        if key in self._said:
            self._said.discard(key)
            if say:
                logger.info(f"opd: {say}")

    async def _resolve(self) -> None:
        """Each handler's served resource (its group, version, plural for the rules); a resource
        not served yet is said once and looked up again later."""
        assert self._operation is not None and self._operation.cluster is not None
        discovery = self._operation.cluster.discovery
        for handler in self.handlers:
            if handler in self.resolved or handler.resource is None:
                continue
            try:
                found = await discovery.resolve(handler.resource)
            except ConfigError as exc:
                self._once(f"resolve {handler.id}", f"{handler.reason} handler {handler.id!r}: {exc}")
                continue
            except REQUEST_ERRORS as exc:
                self._once("unreachable", f"webhooks: API server unreachable ({exc}); retrying")
                return
            if found is None:
                self._once(f"resolve {handler.id}", f"{handler.reason} handler {handler.id!r}: unknown resource "
                                                   f"{handler.resource}; its webhook waits until it is served")
                continue
            self.resolved[handler] = found
            self._healed(f"resolve {handler.id}", f"{handler.reason} handler {handler.id!r}: {found} is served now")

    # -- keeping the cluster's configurations ------------------------------------------------------------------

    def _excluded(self) -> list[str]:
        """The namespaces its webhooks leave alone: the settings' and opd's own."""
        assert self._operation is not None
        own = management.own_namespace()
        given = self._excluded_namespaces
        excluded = self._operation.settings.admission.excluded_namespaces if given is None else given
        return [*excluded, *([own] if own and own not in excluded else [])]

    def _scope(self, managed: str) -> str:
        return f"{management.dns_label(self._owner)}.{managed}" if self._owner else managed

    async def _apply(self, *, stopping: bool = False) -> None:
        """Write what the configurations should say now (stopping: only the persistent webhooks)."""
        assert self._operation is not None
        config = self.client_config
        if config is None:
            return
        settings = self._operation.settings
        self._troubled = any(h not in self.resolved for h in self.handlers)
        managed = settings.admission.managed or self._managed
        if managed and self.admission_handlers:
            for reason in (Reason.VALIDATE, Reason.MUTATE):
                mine = [(h, self.resolved[h]) for h in self.admission_handlers if h.reason == reason and h in
                        self.resolved]
                if not any(h.reason == reason for h in self.admission_handlers):
                    continue
                wanted = management.entries(mine, scope=self._scope(managed), client_config=config,
                                            persistent_only=stopping, excluded=self._excluded())
                key = f"{reason} {managed}"
                try:
                    done = await management.apply(self.client, reason, managed, self._scope(managed), wanted)
                except REQUEST_ERRORS as exc:
                    self._once(key, f"cannot write the {management.KINDS[reason]} {managed!r}: {exc}")
                    continue
                self._healed(key)
                if done != "unchanged":
                    logger.info(f"opd: {management.KINDS[reason]} {managed!r} {done} "
                                f"({len(wanted)} webhook(s) of {self._scope(managed)})")
        if settings.conversion.managed and not stopping:
            for crd in sorted({management.crd_name(self.resolved[h]) for h in self.converters if h in self.resolved}):
                key = f"conversion {crd}"
                try:
                    done = await management.apply_conversion(self.client, crd, config)
                except REQUEST_ERRORS as exc:
                    self._once(key, f"cannot set the conversion of the CRD {crd!r}: {exc}")
                    continue
                self._healed(key)
                if done != "unchanged":
                    logger.info(f"opd: CRD {crd!r}: conversion webhook {done}")
        if not stopping:
            self.applied.set()

    # -- answering reviews -------------------------------------------------------------------------------------

    async def respond(self, review: Mapping[str, Any], *, webhook: str | None = None,
                      headers: Mapping[str, str] | None = None,
                      sslpeer: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
        """Kopf's ``WebhookFn``: one review in, its response out. ``webhook`` is the path under the
        operator's mount (``validate/<id>``); without it, every handler of the review's kind runs."""
        kind = review.get("kind")
        reason, _, wanted_id = (webhook or "").partition("/")
        if reason and reason not in (Reason.VALIDATE, Reason.MUTATE, Reason.CONVERT):
            raise WebhookError(f"no webhooks under {webhook!r}")
        if kind == "AdmissionReview" and reason != Reason.CONVERT:
            return await self._admit(review, reason or None, wanted_id or None, headers, sslpeer)
        if kind == "ConversionReview" and reason in ("", Reason.CONVERT):
            return await self._convert(review)
        raise WebhookError(f"expected an AdmissionReview or a ConversionReview for {webhook or '/'!r}, got {kind!r}")

    def _operator(self) -> arguments.Operator:
        assert self._operation is not None
        return self._operation.operator_arguments()

    async def _run(self, handler: WebhookHandler, kwargs: dict[str, Any]) -> Any:
        # A little less than the API server waits (the webhook's timeoutSeconds): its client then
        # reads why, not the API server's "context deadline exceeded".
        bound = max(0.5, (handler.timeout or DEFAULT_TIMEOUT) - 1.0)
        try:
            return await asyncio.wait_for(invoke(handler, kwargs, executor=self._executor), bound)
        except TimeoutError:
            raise HandlerTimeoutError(f"{handler.reason} handler {handler.id!r} did not answer within {bound:g}s"
                                      ) from None

    async def _admit(self, review: Mapping[str, Any], reason: str | None, wanted_id: str | None,
                     headers: Mapping[str, str] | None, sslpeer: Mapping[str, Any] | None) -> Mapping[str, Any]:
        request = admission.read(review)
        handlers = [h for h in self.admission_handlers
                    if (reason is None or h.reason == reason) and (wanted_id is None or h.id == wanted_id)
                    and admission.applies(h, request, self.resolved.get(h))]
        resource = next((self.resolved[h] for h in handlers if h in self.resolved), None)
        where = f"{request.operation} {request.plural} {request.where}"
        # Kopf's admission handlers get an object logger that posts no Events (there may be no object yet).
        log = LocalObjectLogger({"object": brief(request.where, 300), "resource": brief(request.plural, 100)})
        kwargs = admission.kwargs_for(request, headers=headers, sslpeer=sslpeer, warnings=[], patch=Patch(),
                                      operator=self._operator(), resource=resource, logger=log)
        answer = await admission.answer(review, request, handlers, kwargs, self._run)
        outcome = answer["response"]
        if not outcome["allowed"]:
            # One line whatever the review's names hold (a newline in a name would forge a log line).
            logger.info(brief(f"opd: refused {where}{' (dry run)' if request.dryrun else ''}: "
                              f"{outcome['status']['message']}", limit=MAX_LOG_LINE))
        return answer

    async def _convert(self, review: Mapping[str, Any]) -> Mapping[str, Any]:
        _, desired, objects = conversion.read(review)
        group = desired.rpartition("/")[0]
        kinds = {str(o.get("kind", "")) for o in objects}
        converters = [h for h in self.converters if h in self.resolved and self.resolved[h].group == group
                      and self.resolved[h].kind in kinds]
        operator = self._operator()

        async def run(handler: WebhookHandler, body: dict[str, Any]) -> Any:
            log = LocalObjectLogger({"object": brief(_where(body.get("metadata") or {}), 300),
                                     "resource": str(self.resolved.get(handler, ""))})
            kwargs = arguments.conversion(operator, body, from_version=handler.from_version,
                                          to_version=handler.to_version, resource=self.resolved.get(handler),
                                          reason=str(handler.reason), param=handler.param, logger=log)
            return await self._run(handler, kwargs)

        answer = await conversion.answer(review, converters, run)
        result = answer["response"]["result"]
        if result["status"] != "Success":
            logger.error(brief(f"opd: conversion to {desired} failed: {result['message']}", limit=MAX_LOG_LINE))
        return answer


def _where(meta: Mapping[str, Any]) -> str:
    name = meta.get("name") or "?"
    return f"{meta['namespace']}/{name}" if meta.get("namespace") else str(name)

