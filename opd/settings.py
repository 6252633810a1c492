"""Operator settings: plain dataclasses, one instance per operator (never global)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class WatchingSettings:
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


@dataclass
class ProcessingSettings:
    # Objects processed at once per operator; more wait in a queue (latest state wins).
    workers: int = 64
    # A PATCH's own watch event may lag: events older than our last write are skipped.
    skip_stale_events: bool = True


@dataclass
class PersistenceSettings:
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

    @property
    def finalizer(self) -> str:
        return f"{self.prefix}/finalizer"


@dataclass
class NetworkingSettings:
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


@dataclass
class ExecutionSettings:
    # Thread pool for sync handlers; None: Python's default size.
    max_workers: int | None = None


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
class PostingSettings:
    # Kubernetes Events for handler outcomes and opd.info/warn/exception.
    enabled: bool = True
    level: str | int = "info"  # debug, info, warning, error (or logging's numbers): the least severe posted
    batch_window: float = 0.5


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
