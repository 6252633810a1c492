"""opd: a Kubernetes operator daemon for Python.

The public API: everything a user imports as ``opd.<name>`` is re-exported here.
"""

from opd import on
from opd._version import __version__
from opd.callbacks import all_, any_, none_, not_
from opd.engine.diffs import Patch
from opd.engine.events import event, exception, info, warn
from opd.engine.indexing import Index, Store
from opd.engine.spawning import Stopped
from opd.errors import (
    AdmissionError,
    ConfigError,
    ControlPlaneError,
    HandlerRetriesError,
    HandlerTimeoutError,
    OpdError,
    PermanentError,
    TemporaryError,
)
from opd.kube.credentials import ConnectionInfo, Login, LoginError
from opd.kube.logins import (
    login_via_async_client,
    login_via_client,
    login_via_pykube,
    login_with_kubeconfig,
    login_with_service_account,
)
from opd.logs import LogFormat, configure
from opd.on import daemon, index, timer
from opd.orchestration import Memo, operator, run, run_tasks, spawn_tasks
from opd.plugin import Option, hookimpl
from opd.registry import (
    ABSENT,
    PRESENT,
    ErrorsMode,
    OperatorRegistry,
    Reason,
    get_default_registry,
    set_default_registry,
)
from opd.resources import Resource
from opd.settings import OperatorSettings

# Kopf's progress and diff-base storages (settings.persistence.progress_storage / diffbase_storage).
from opd.storages import (
    AnnotationsDiffBaseStorage,
    AnnotationsProgressStorage,
    DiffBaseStorage,
    MultiDiffBaseStorage,
    MultiProgressStorage,
    ProgressRecord,
    ProgressStorage,
    SmartProgressStorage,
    StatusDiffBaseStorage,
    StatusProgressStorage,
)
from opd.subhandlers import execute, register, subhandler
from opd.toolkits import (
    adjust_namespace,
    adopt,
    append_owner_reference,
    build_object_reference,
    build_owner_reference,
    harmonize_naming,
    label,
    remove_owner_reference,
)
from opd.typedefs import (
    Annotations,
    Body,
    BodyEssence,
    DaemonStoppingReason,
    Diff,
    DiffItem,
    DiffOperation,
    FieldPath,
    FieldSpec,
    HandlerId,
    Headers,
    Labels,
    LocalObjectLogger,
    Logger,
    Meta,
    ObjectLogger,
    ObjectReference,
    OwnerReference,
    RawBody,
    RawEvent,
    RawEventType,
    Spec,
    SSLPeer,
    Status,
    UserInfo,
)
from opd.webhooks.server import (
    ClientConfig as WebhookClientConfig,
)
from opd.webhooks.server import WebhookFn, WebhookServer
from opd.webhooks.variants import (
    WebhookAutoServer,
    WebhookAutoTunnel,
    WebhookDockerDesktopServer,
    WebhookK3dServer,
    WebhookMinikubeServer,
    WebhookNgrokTunnel,
)

DaemonStopped = Stopped  # Kopf's name for a daemon's ``stopped``

__all__ = [
    "ABSENT",
    "PRESENT",
    "AdmissionError",
    "Annotations",
    "Body",
    "BodyEssence",
    "ConfigError",
    "ConnectionInfo",
    "ControlPlaneError",
    "DaemonStopped",
    "DaemonStoppingReason",
    "Diff",
    "DiffItem",
    "DiffOperation",
    "ErrorsMode",
    "FieldPath",
    "FieldSpec",
    "HandlerId",
    "HandlerRetriesError",
    "HandlerTimeoutError",
    "Headers",
    "Index",
    "Labels",
    "LocalObjectLogger",
    "LogFormat",
    "Logger",
    "Login",
    "LoginError",
    "Memo",
    "Meta",
    "ObjectLogger",
    "ObjectReference",
    "OpdError",
    "OperatorRegistry",
    "OperatorSettings",
    "Option",
    "OwnerReference",
    "Patch",
    "PermanentError",
    "RawBody",
    "RawEvent",
    "RawEventType",
    "Reason",
    "Resource",
    "SSLPeer",
    "Spec",
    "Status",
    "Stopped",
    "Store",
    "TemporaryError",
    "UserInfo",
    "WebhookAutoServer",
    "WebhookAutoTunnel",
    "WebhookClientConfig",
    "WebhookDockerDesktopServer",
    "WebhookFn",
    "WebhookK3dServer",
    "WebhookMinikubeServer",
    "WebhookNgrokTunnel",
    "WebhookServer",
    "__version__",
    "adjust_namespace",
    "adopt",
    "all_",
    "any_",
    "append_owner_reference",
    "build_object_reference",
    "build_owner_reference",
    "configure",
    "daemon",
    "event",
    "exception",
    "execute",
    "get_default_registry",
    "harmonize_naming",
    "hookimpl",
    "index",
    "info",
    "label",
    "login_via_async_client",
    "login_via_client",
    "login_via_pykube",
    "login_with_kubeconfig",
    "login_with_service_account",
    "none_",
    "not_",
    "on",
    "operator",
    "register",
    "remove_owner_reference",
    "run",
    "run_tasks",
    "set_default_registry",
    "spawn_tasks",
    "subhandler",
    "timer",
    "warn",
]

# Kopf's progress and diff-base storages:
__all__ += [
    "AnnotationsDiffBaseStorage",
    "AnnotationsProgressStorage",
    "DiffBaseStorage",
    "MultiDiffBaseStorage",
    "MultiProgressStorage",
    "ProgressRecord",
    "ProgressStorage",
    "SmartProgressStorage",
    "StatusDiffBaseStorage",
    "StatusProgressStorage",
]
