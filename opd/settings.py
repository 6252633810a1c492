"""Operator settings: plain dataclasses, one instance per operator (never global).

Every group and setting Kopf documents exists here under its Kopf name. Where opd works otherwise
(it never peers, it keeps its own timers...), the Kopf setting is accepted and does the closest right
thing, said once in the log when a handler sets it (``Noted``).
"""

from __future__ import annotations

import concurrent.futures
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from loguru import logger

from opd.storages import DiffBaseStorage, ProgressStorage

# A note for a Kopf setting opd takes otherwise: (its value) -> the line to log, or None to say nothing.
Note = Callable[[Any], str | None]


class Noted:
    """A settings group that says once, per setting, how opd takes a Kopf setting set after creation."""

    _group: ClassVar[str] = ""
    _notes: ClassVar[dict[str, Note]] = {}

    def __post_init__(self) -> None:
        object.__setattr__(self, "_said", set())

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        said: set[str] | None = self.__dict__.get("_said")
        if said is None or name in said:
            return  # still being made (defaults), or said already
        known = name in getattr(self, "__dataclass_fields__", {}) or hasattr(type(self), name)
        if not known and not name.startswith("_"):  # a typo, or a setting of neither Kopf nor opd
            said.add(name)
            logger.warning(f"opd: settings.{self._group}.{name} is no setting of opd's or Kopf's: it does nothing")
            return
        note = self._notes.get(name)
        if note is None:
            return
        line = note(value)
        if line:
            said.add(name)
            logger.info(f"opd: settings.{self._group}.{name} = {value!r}: {line}")


def _always(text: str) -> Note:
    return lambda _value: text


_PEERING = ("opd never peers (no KopfPeering objects are read or written): replicas coordinate with Leases, "
            "`opd run --ha leader` for a single active replica, `--ha shards` to share the objects")


def _if(test: Callable[[Any], bool], text: str) -> Note:
    return lambda value: text if test(value) else None


_QUALIFIED = re.compile(r"(([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]*[a-z0-9])?/)?"
                        r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")


def check_finalizer(name: Any) -> str:
    """A finalizer must be a qualified name (``example.com/my-finalizer``), as Kubernetes takes it."""
    if not isinstance(name, str) or not _QUALIFIED.fullmatch(name) or len(name.rsplit("/", 1)[-1]) > 63 \
            or len(name.split("/")[0]) > 253 or "/" not in name:
        raise ValueError(f"settings.persistence.finalizer must be a qualified name like "
                         f"'example.com/my-finalizer' (a DNS domain, '/', a name of at most 63 characters), "
                         f"not {name!r}")
    return name


@dataclass
class WatchingSettings(Noted):
    _group: ClassVar[str] = "watching"
    # A quiet stream is not a dead one: opd does not reconnect streams for silence. A dead peer is
    # found by TCP keepalive on each stream's socket; a path that hangs silently (every connection
    # blackholed) by one cheap request per cluster every ``probe_interval`` seconds, on a connection
    # kept for it, which the API server must answer within ``probe_timeout``.
    probe_interval: float = 4.0
    probe_timeout: float = 3.0
    # A backstop: a stream silent this long (past the server's own bound) is resumed.
    inactivity_timeout: float = 330.0
    # Server-side bound of one watch request; the stream is resumed from its resourceVersion.
    server_timeout: int = 300
    connect_timeout: float = 10.0
    list_page_size: int = 500
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    # Kopf's, taken otherwise (said once when set):
    client_timeout: float | None = None
    initial_streaming: bool = False
    label_selectors: dict[Any, Any] = field(default_factory=dict)
    field_selectors: dict[Any, Any] = field(default_factory=dict)
    shard_selectors: dict[Any, Any] = field(default_factory=dict)
    _notes: ClassVar[dict[str, Note]] = {
        "server_timeout": _if(lambda v: v is None, "opd keeps a server-side bound: 300 s"),
        "connect_timeout": _if(lambda v: v is None, "opd keeps a bound: 10 s"),
        "client_timeout": _if(lambda v: v is not None, "not used: a watch is bounded by server_timeout "
                                                        "(server-side) and inactivity_timeout (a silent stream)"),
        "initial_streaming": _if(bool, "not used: opd lists in pages (list_page_size), then watches"),
        "label_selectors": _if(bool, "not used: give handlers labels= (they go to the API server as a selector)"),
        "field_selectors": _if(bool, "not used: filter with handlers' field=/value=/when="),
        "shard_selectors": _if(bool, "not used: opd shards by Leases (`opd run --ha shards`)"),
        "chunk_size": _if(lambda v: v is None, "opd lists in pages of list_page_size (500 by default)"),
    }

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "server_timeout":
            # Kopf's None: no bound of its own; opd keeps the API server's usual one. A whole number of seconds.
            value = 300 if value is None else max(1, int(value))
        elif name == "connect_timeout" and value is None:
            value = 10.0
        super().__setattr__(name, value)

    # Kopf's names for opd's settings:
    @property
    def reconnect_backoff(self) -> float:
        return self.backoff_initial

    @reconnect_backoff.setter
    def reconnect_backoff(self, value: float) -> None:
        self.backoff_initial = value

    @property
    def chunk_size(self) -> int | None:
        return self.list_page_size

    @chunk_size.setter
    def chunk_size(self, value: int | None) -> None:
        if value is not None:  # Kopf's None: all in one response; opd pages every list (bounded memory)
            self.list_page_size = max(1, int(value))


@dataclass
class ProcessingSettings(Noted):
    """opd's processing; Kopf's ``settings.queueing`` (and ``settings.batching``) are this group."""

    _group: ClassVar[str] = "queueing"
    # Objects processed at once per operator; more wait in a queue (latest state wins).
    workers: int = 64
    # A PATCH's own watch event may lag: events older than our last write are skipped.
    skip_stale_events: bool = True
    # Kopf's, taken otherwise (said once when set):
    idle_timeout: float = 5.0
    exit_timeout: float = 2.0
    error_delays: Iterable[float] = (1, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610)
    batch_window: float = 0.1
    _notes: ClassVar[dict[str, Note]] = {
        "worker_limit": _if(lambda v: v is None, "opd keeps its bound: settings.processing.workers "
                                                 "(64 by default) objects processed at once"),
        "idle_timeout": _always("not needed: opd's workers serve any object and end when the queue is empty"),
        "exit_timeout": _always("a stop waits settings.shutdown.timeout for in-flight handlers"),
        "error_delays": _always("opd retries the API with settings.watching.backoff_initial..backoff_max "
                                "(doubling, Retry-After honoured)"),
        "batch_window": _always("not needed: opd's queue keeps only an object's latest state, so a burst of "
                                "events is processed once without waiting"),
    }

    @property
    def worker_limit(self) -> int | None:
        return self.workers

    @worker_limit.setter
    def worker_limit(self, value: int | None) -> None:
        if value is not None:  # Kopf's None: no limit; opd keeps one (memory and connections stay bounded)
            self.workers = max(1, int(value))


@dataclass
class PersistenceSettings(Noted):
    _group: ClassVar[str] = "persistence"
    # Annotation domain (and finalizer name) for diff-base and progress markers.
    prefix: str = "opd.dev"
    # Where markers live: "auto" (status when the resource has a status subresource
    # and keeps unknown fields there, else annotations), "annotations", or "status".
    storage: str = "auto"
    status_field: str = "opd"
    # Handler results go to status.<handler id> (as in Kopf), or to status.<results_field>.<handler id>
    # when set: the daemon gives each plugin its own, so equal handler ids never collide.
    results_field: str | None = None
    # A larger diff-base is kept as a digest: changes are still seen, but update handlers get old=None.
    max_diff_base: int = 128 * 1024
    # Kopf's storages (opd.storages): None keeps opd's own places (prefix, storage, status_field).
    progress_storage: ProgressStorage | None = None
    diffbase_storage: DiffBaseStorage | None = None
    consistency_timeout: float = 5.0
    _finalizer: str | None = field(default=None, repr=False)  # None: "<prefix>/finalizer"
    _notes: ClassVar[dict[str, Note]] = {
        "consistency_timeout": _always("not needed: opd skips the watch events older than its own last write "
                                       "(settings.processing.skip_stale_events) without waiting"),
    }

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "progress_storage" and value is not None and not isinstance(value, ProgressStorage):
            raise ValueError(f"settings.persistence.progress_storage must be a ProgressStorage (e.g. "
                             f"opd.StatusProgressStorage(field='status.my-op')), not {type(value).__name__}")
        if name == "diffbase_storage" and value is not None and not isinstance(value, DiffBaseStorage):
            raise ValueError(f"settings.persistence.diffbase_storage must be a DiffBaseStorage (e.g. "
                             f"opd.AnnotationsDiffBaseStorage(prefix='my.dev')), not {type(value).__name__}")
        super().__setattr__(name, value)

    @property
    def finalizer(self) -> str:
        return self._finalizer or f"{self.prefix}/finalizer"

    @finalizer.setter
    def finalizer(self, name: str | None) -> None:
        self._finalizer = None if name is None else check_finalizer(name)


@dataclass
class NetworkingSettings(Noted):
    _group: ClassVar[str] = "networking"
    # Concurrent watch streams' connections to the API server (each stream holds one).
    connection_limit: int = 256
    # Connections for requests (writes, reads), shared by every operator of the process: requests
    # beyond wait for one. 256 made ~256 TLS connections under a backlog (a handshake and buffers
    # each) for no more throughput: the API server is the limit (the bench's raw client: 32).
    request_connections: int = 32
    request_timeout: float = 60.0
    # A pooled keep-alive connection may be dead without an RST (dropped NAT entry):
    # a request that gets no byte back for this long fails and is retried on a new one.
    read_timeout: float = 10.0
    connect_timeout: float = 10.0
    # Kopf's, taken otherwise (said once when set):
    error_backoffs: float | Iterable[float] = (1, 1, 2, 3, 5, 8, 13, 21)
    enforce_retry_after: bool = False
    trust_env: bool = False
    _notes: ClassVar[dict[str, Note]] = {
        "request_timeout": _if(lambda v: v is None, "opd keeps a bound: 60 s"),
        "connect_timeout": _if(lambda v: v is None, "opd keeps a bound: 10 s"),
        "error_backoffs": _always("opd retries the API with settings.watching.backoff_initial..backoff_max "
                                  "(doubling)"),
        "enforce_retry_after": _always("opd always honours the API server's Retry-After"),
        "trust_env": _if(bool, "not used: opd connects where the login (kubeconfig, service account) says, "
                               "without the environment's proxies"),
    }

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "request_timeout" and value is None:
            value = 60.0
        elif name == "connect_timeout" and value is None:
            value = 10.0
        super().__setattr__(name, value)


@dataclass
class ExecutionSettings(Noted):
    _group: ClassVar[str] = "execution"
    # Thread pool for sync handlers; None: Python's default size.
    max_workers: int | None = None
    # Kopf's: an executor of your own for sync handlers (opd then neither sizes nor shuts it down).
    executor: concurrent.futures.Executor | None = None
    default_backoff: float = 60
    _notes: ClassVar[dict[str, Note]] = {
        "default_backoff": _always("not used: a failing handler without backoff= is retried after "
                                   "settings.retries.backoff_initial, doubling up to backoff_max"),
    }


@dataclass
class ShutdownSettings:
    # Bound for a graceful stop: in-flight handlers get this long, then are cancelled.
    timeout: float = 8.0


@dataclass
class RetrySettings:
    # Backoff for handlers that raise an unexpected error: initial * 2**retry, capped.
    backoff_initial: float = 1.0
    backoff_max: float = 300.0


@dataclass
class PostingSettings(Noted):
    _group: ClassVar[str] = "posting"
    # Kubernetes Events for handler outcomes and opd.info/warn/exception.
    enabled: bool = True
    level: str | int = "info"  # debug, info, warning, error (or logging's numbers): the least severe posted
    batch_window: float = 0.5
    loggers: bool = False  # as Kopf's: handlers' log lines posted as Events too (off by default)
    # Kopf's, taken otherwise (said once when set):
    default_backoffs: float | Iterable[float] = (1, 1, 2, 3, 5, 8, 13, 21)
    logging_backoffs: float | Iterable[float] = (1, 1, 2, 3, 5)
    worker_limit: int | None = None
    idle_timeout: float = 1.0
    # Events' source and reportingComponent, reportingInstance (None: the host's name), and the prefix
    # of their names (None: the object's name and a dot), as Kopf's settings of these names.
    reporting_component: str = "opd"
    reporting_instance: str | None = None
    event_name_prefix: str | None = None
    _notes: ClassVar[dict[str, Note]] = {
        "default_backoffs": _always("not used: an Event that fails to post is dropped (said at debug level)"),
        "logging_backoffs": _always("not used: a log line's Event that fails to post is dropped"),
        "worker_limit": _always("not needed: Events are posted by one task per operator, folded per object"),
        "idle_timeout": _always("not needed: Events are posted by one task per operator"),
    }

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("reporting_component", "reporting_instance") and value is not None and (
                not isinstance(value, str) or not 0 < len(value) <= 128):
            raise ValueError(f"settings.posting.{name} must be a text of 1 to 128 characters, not {value!r}")
        if name == "event_name_prefix" and value is not None and (
                not isinstance(value, str) or not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,199})", value)):
            raise ValueError(f"settings.posting.event_name_prefix must start an object name (lowercase letters, "
                             f"digits, '-', '.'; at most 200), not {value!r}")
        super().__setattr__(name, value)


@dataclass
class PeeringSettings(Noted):
    """Kopf's peering. opd never peers: every setting is accepted and said once; see ``_PEERING``."""

    _group: ClassVar[str] = "peering"
    name: str = "default"
    stealth: bool = False
    priority: int = 0
    lifetime: int = 60
    mandatory: bool = False
    standalone: bool = False
    clusterwide: bool = False
    _notes: ClassVar[dict[str, Note]] = {
        "standalone": lambda v: ("nothing to do: opd never peers" if v else
                                 "opd never peers; for one active replica among several: `opd run --ha leader`"),
        "mandatory": _if(bool, _PEERING),
        "name": _always(_PEERING), "priority": _always(_PEERING), "lifetime": _always(_PEERING),
        "clusterwide": _always(_PEERING), "stealth": _always(f"nothing to do: {_PEERING}"),
    }

    @property
    def namespaced(self) -> bool:
        return not self.clusterwide

    @namespaced.setter
    def namespaced(self, value: bool) -> None:
        self.clusterwide = not value


@dataclass
class ScanningSettings(Noted):
    _group: ClassVar[str] = "scanning"
    disabled: bool = False
    _notes: ClassVar[dict[str, Note]] = {
        "disabled": _if(bool, "nothing to turn off: opd does not scan CRDs at runtime (it reads discovery for the "
                              "resources handlers name); namespace patterns still list and watch namespaces"),
    }


@dataclass
class BackgroundSettings(Noted):
    _group: ClassVar[str] = "background"
    cancellation_polling: float = 60
    instant_exit_timeout: float | None = None
    instant_exit_zero_time_cycles: int | None = 10
    _notes: ClassVar[dict[str, Note]] = {
        "cancellation_polling": _always("not needed: opd waits for a stopping daemon by its task, not by polling"),
        "instant_exit_timeout": _always("not used: a daemon that returns at once ends; a stop waits "
                                        "settings.shutdown.timeout"),
        "instant_exit_zero_time_cycles": _always("not used: a daemon that returns at once ends"),
    }


@dataclass
class ProcessSettings(Noted):
    _group: ClassVar[str] = "process"
    ultimate_exiting_timeout: float | None = 10 * 60
    _notes: ClassVar[dict[str, Note]] = {
        "ultimate_exiting_timeout": _always("not used: opd's graceful stop is bounded by settings.shutdown.timeout "
                                            "(handlers still running are then cancelled)"),
    }


@dataclass
class AdmissionSettings:
    # The server the API server calls with admission (and conversion) reviews: an opd.WebhookServer
    # (or a variant), or any callable(fn) -> async iterator of client configs, as with Kopf. Under
    # `opd start`, every plugin's webhooks go to the daemon's one server ([webhooks]) instead.
    server: Any = None
    # The name of the Validating/MutatingWebhookConfiguration opd creates and keeps current
    # (e.g. "auto.opd.dev"); None: not managed (the cluster's configuration is yours to write).
    managed: str | None = None
    # Namespaces the managed webhooks never cover (their `namespaceSelector`, on the label
    # `kubernetes.io/metadata.name` that API servers set on every namespace since 1.21): a webhook
    # failing there cannot stop the cluster's own pods or opd's. opd's own namespace (the pod's,
    # when opd runs in one) is added to these. []: every namespace.
    excluded_namespaces: list[str] = field(default_factory=lambda: ["kube-system"])


@dataclass
class ConversionSettings:
    # opd sets `spec.conversion` (strategy Webhook, its URL and CA) of each CRD it has converters for.
    managed: bool = True


@dataclass
class OperatorSettings:
    watching: WatchingSettings = field(default_factory=WatchingSettings)
    processing: ProcessingSettings = field(default_factory=ProcessingSettings)
    persistence: PersistenceSettings = field(default_factory=PersistenceSettings)
    networking: NetworkingSettings = field(default_factory=NetworkingSettings)
    execution: ExecutionSettings = field(default_factory=ExecutionSettings)
    shutdown: ShutdownSettings = field(default_factory=ShutdownSettings)
    retries: RetrySettings = field(default_factory=RetrySettings)
    posting: PostingSettings = field(default_factory=PostingSettings)
    admission: AdmissionSettings = field(default_factory=AdmissionSettings)
    conversion: ConversionSettings = field(default_factory=ConversionSettings)
    # Kopf's groups that opd takes otherwise (each setting said once when set):
    peering: PeeringSettings = field(default_factory=PeeringSettings)
    scanning: ScanningSettings = field(default_factory=ScanningSettings)
    background: BackgroundSettings = field(default_factory=BackgroundSettings)
    process: ProcessSettings = field(default_factory=ProcessSettings)

    @property
    def queueing(self) -> ProcessingSettings:
        """Kopf's name for opd's processing settings (``worker_limit`` is ``workers``)."""
        return self.processing

    @property
    def batching(self) -> ProcessingSettings:
        """Kopf's older name for ``queueing``."""
        return self.processing
