"""The daemon's TOML configuration (``/etc/opd/opd.toml``): read, validated, frozen.

Validation reports every problem at once, one line each, naming the key path
(``[opd].namespaces: expected a list of strings, got integer``), so a person fixes
a file in one pass instead of one restart per mistake. A plugin's own keys are checked
against the options it declares, once it is loaded (``opd.plugin.options``).
"""

from __future__ import annotations

import copy
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from opd.errors import ConfigError
from opd.plugin.options import MAX_NESTING, RESERVED, bounded, closest, nesting, table_key, toml_type, unknown

# pyproject requires 3.11 today; the tomli fallback (a conditional dependency) keeps 3.10 a one-line change.
if sys.version_info >= (3, 11):  # noqa: UP036
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_PATH = Path("/etc/opd/opd.toml")
ENV_VAR = "OPD_CONFIG"
# A second file, with the secret keys (a Kubernetes Secret mounted beside the ConfigMap): its tables
# overlay the main file's before validation. Set only by who runs opd, never by the config itself.
SECRETS_ENV_VAR = "OPD_CONFIG_SECRETS"
# A config file is written by people: far below this. Read no more than that of whatever the path holds.
MAX_FILE_BYTES = 1 << 20

LOG_LEVELS = ("trace", "debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "text", "json", "journal")
ISOLATIONS = ("shared", "thread")
DEFAULT_SHUTDOWN_TIMEOUT = 8.0

# The keys opd reads (and removes) from a plugin's own table [plugins.<name>].
PLUGIN_OWN_KEYS = RESERVED


# A namespace is a DNS label; globs add * ? [ ], and a leading ! negates.
_NAMESPACE_PATTERN = re.compile(r"!?[a-z0-9*?\[\]-]{1,63}")


class ConfigFileError(ConfigError):
    """Every problem of one config file; ``lines()`` gives one line per problem, prefixed with the path.

    ``partial`` is what the valid rest of the file says (None when it could not be read or
    parsed), so that the plugins' tables can still be checked in the same pass.
    """

    def __init__(self, source: str, problems: Sequence[str], partial: DaemonConfig | None = None) -> None:
        self.source = source
        self.problems = bounded(problems)
        self.partial = partial
        super().__init__(self._summary())

    def lines(self) -> list[str]:
        return [f"{self.source}: {problem}" for problem in self.problems]

    def _summary(self) -> str:
        if len(self.problems) == 1:
            return self.lines()[0]
        return f"{self.source}: {len(self.problems)} problems: " + "; ".join(self.problems)


@dataclass(frozen=True)
class Listen:
    """The address of the health and metrics endpoint."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class OpdSection:
    # Empty namespaces with clusterwide: serve every namespace (the engine's default too).
    namespaces: tuple[str, ...] = ()
    clusterwide: bool = True
    log_level: str = "info"
    log_format: str = "auto"
    listen: Listen | None = None
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT


@dataclass(frozen=True)
class KubernetesSection:
    # The fields of opd.Login, so ``Login(**dataclasses.asdict(section))`` holds.
    # None everywhere: Login's own order (in-cluster, $KUBECONFIG, ~/.kube/config).
    kubeconfig: str | None = None  # absolute: a relative path in the file is relative to the file
    context: str | None = None
    in_cluster: bool | None = None


HA_MODES = ("off", "leader", "shards")


@dataclass(frozen=True)
class HaSection:
    """Replicas coordinated through coordination.k8s.io/v1 Leases (timings: client-go's defaults)."""

    mode: str = "off"  # off: one process does everything; leader: active/standby; shards: split the objects
    lease: str = "opd"  # the Lease's name (shards: <lease>-<i>)
    lease_namespace: str = "default"
    identity: str | None = None  # None: $OPD_HA_IDENTITY, else <hostname>_<UUID>
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    shards: int = 1


@dataclass(frozen=True)
class WebhooksSection:
    """The one HTTPS server for every plugin's admission handlers and converters (a path each)."""

    listen: Listen = Listen("127.0.0.1", 9443)
    host: str | None = None  # the name or address the API server dials; None: listen's (localhost for 0.0.0.0)
    url: str | None = None  # or the base URL it dials (a proxy in front)
    service: str | None = None  # or a Service in front: "namespace/name[:port]"
    cert_dir: str | None = None  # absolute; None: a CA and certificate made per process
    managed: str = "opd.dev"  # the webhook configurations' name; "": not managed
    # Namespaces the managed webhooks leave alone (namespaceSelector), besides opd's own in a pod:
    # a failing webhook must not block the cluster's own components or opd's pods.
    excluded_namespaces: tuple[str, ...] = ("kube-system",)


@dataclass(frozen=True)
class PluginTable:
    """``[plugins.<name>]`` as written: opd's keys (None when absent) and the plugin's own options."""

    namespaces: tuple[str, ...] | None = None
    clusterwide: bool | None = None
    isolation: str | None = None
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    # A plugin without an entry point (a Kopf operator as it is): its module's dotted name, or its file.
    module: str | None = None
    file: str | None = None  # absolute: a relative path in the file is relative to the file


@dataclass(frozen=True)
class PluginConfig:
    """What one plugin runs with: its scope and isolation resolved against ``[opd]``, and its options."""

    namespaces: tuple[str, ...]
    clusterwide: bool
    isolation: str
    options: Mapping[str, Any]
    module: str | None = None  # where a plugin without an entry point is (see PluginTable)
    file: str | None = None

    def options_copy(self) -> dict[str, Any]:
        """A fresh deep copy for the plugin's hooks: whatever a plugin mutates stays its own."""
        return copy.deepcopy(dict(self.options))


@dataclass(frozen=True)
class PluginsSection:
    enable: tuple[str, ...] | None = None  # None: no allow-list, every installed plugin
    disable: tuple[str, ...] = ()
    tables: Mapping[str, PluginTable] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class DaemonConfig:
    opd: OpdSection = field(default_factory=OpdSection)
    kubernetes: KubernetesSection = field(default_factory=KubernetesSection)
    plugins: PluginsSection = field(default_factory=PluginsSection)
    ha: HaSection = field(default_factory=HaSection)
    webhooks: WebhooksSection = field(default_factory=WebhooksSection)
    # The file it was read from; None when no file was read (all defaults).
    path: Path | None = None

    def plugin(self, name: str) -> PluginConfig:
        """The resolved configuration of the plugin ``name`` (installed or not, listed or not)."""
        table = self.plugins.tables.get(name, PluginTable())
        if table.namespaces is not None:
            namespaces, clusterwide = table.namespaces, False
        elif table.clusterwide:
            namespaces, clusterwide = (), True
        else:
            namespaces, clusterwide = self.opd.namespaces, self.opd.clusterwide
        return PluginConfig(
            namespaces=namespaces,
            clusterwide=clusterwide,
            isolation=table.isolation or "shared",
            options=table.options,
            module=table.module,
            file=table.file,
        )


# -- reading -------------------------------------------------------------------------------------------------------


def resolve_path(path: Path | str | None = None, env: Mapping[str, str] | None = None) -> tuple[Path, bool]:
    """The config file to read, and whether it was asked for explicitly (then it must exist).

    An explicit path, else ``$OPD_CONFIG`` (explicit too: a variable naming a missing file is
    a mistake), else ``/etc/opd/opd.toml``, which may be absent (then defaults apply).
    """
    env = os.environ if env is None else env
    if path is not None and str(path) != "":
        return Path(path), True
    if env.get(ENV_VAR):
        return Path(env[ENV_VAR]), True
    return DEFAULT_PATH, False


def _namespace_name(name: str) -> str | None:
    return None if _NAMESPACE.fullmatch(name) else f"expected a namespace's name (a DNS label), got {name!r}"


def secrets_path(env: Mapping[str, str] | None = None) -> Path | None:
    """The secrets file to overlay (``$OPD_CONFIG_SECRETS``), or None."""
    env = os.environ if env is None else env
    return Path(env[SECRETS_ENV_VAR]) if env.get(SECRETS_ENV_VAR) else None


def load(path: Path | str | None = None, env: Mapping[str, str] | None = None) -> DaemonConfig:
    """Read and validate the config file, overlaid with the secrets file when ``$OPD_CONFIG_SECRETS``
    names one; raises ConfigFileError listing every problem."""
    target, explicit = resolve_path(path, env)
    secrets = secrets_path(env)
    extra = (_read(secrets), secrets) if secrets is not None else None
    if not explicit and not target.exists():
        return parse(b"", secrets=extra) if extra is not None else DaemonConfig()
    return parse(_read(target), path=target, secrets=extra)


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigFileError(str(path), [f"cannot read: {exc.strerror or exc}"]) from None
    return data  # one byte past the bound, for parse() to refuse


def parse(data: bytes | str, path: Path | None = None,
          secrets: tuple[bytes | str, Path] | None = None) -> DaemonConfig:
    """Parse and validate TOML text; ``path`` names it in messages and anchors relative paths.

    ``secrets`` (its text and path) overlays it: its tables merge into the file's, key by key at
    any depth, and any other value of it replaces the file's; validation sees the result.
    """
    source = str(path) if path is not None else "<config>"
    document = _toml(data, source)
    if secrets is not None:
        secret_data, secret_path = secrets
        conflicts = overlay(document, _toml(secret_data, str(secret_path)))
        source = f"{source} (with {secret_path})"
        if conflicts:
            raise ConfigFileError(source, conflicts)
    problems: list[str] = []
    base = (path.parent if path is not None else Path.cwd()).absolute()
    parsed = _Validator(problems, base).document(document)
    config = DaemonConfig(opd=parsed.opd, kubernetes=parsed.kubernetes, plugins=parsed.plugins, ha=parsed.ha,
                          webhooks=parsed.webhooks,
                          path=path)
    if problems:
        raise ConfigFileError(source, problems, partial=config)
    return config


def _toml(data: bytes | str, source: str) -> dict[str, Any]:
    if len(data) > MAX_FILE_BYTES:
        raise ConfigFileError(source, [f"larger than {MAX_FILE_BYTES >> 20} MiB: not read "
                                       "(a config file is a few KiB)"])
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise ConfigFileError(source, [f"line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x})"]) from None
    else:
        text = data
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(source, [_syntax_problem(exc)]) from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise ConfigFileError(source, ["TOML syntax error: arrays or inline tables nested too deeply"]) from None
    except ValueError as exc:  # an integer past Python's digit limit (4300), where tomllib does not say where
        raise ConfigFileError(source, [f"TOML syntax error: {' '.join(str(exc).split())}"]) from None
    if nesting(document) > MAX_NESTING:
        raise ConfigFileError(source, [f"tables or arrays nested more than {MAX_NESTING} levels deep"])
    return document


def overlay(base: dict[str, Any], top: Mapping[str, Any], where: tuple[str, ...] = ()) -> list[str]:
    """Merge ``top`` into ``base`` in place: tables key by key, any other value replaces. Returns the
    conflicts (a table in one, a value in the other), one line each, naming the key."""
    conflicts = []
    for key, value in top.items():
        here = (*where, key)
        mine = base.get(key)
        if isinstance(mine, dict) and isinstance(value, Mapping):
            conflicts += overlay(mine, value, here)
        elif key in base and (isinstance(mine, dict) or isinstance(value, Mapping)):
            name = ".".join(table_key(k) for k in here)
            conflicts.append(f"{name}: a table in one file and a value in the other (the secrets file overlays "
                             "tables key by key)")
        else:
            base[key] = copy.deepcopy(value)
    return conflicts


def _syntax_problem(exc: tomllib.TOMLDecodeError) -> str:
    # tomllib says "Invalid value (at line 3, column 9)"; lead with the position, like every other line.
    message = str(exc)
    found = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if found:
        message = message[: found.start()]
        where = f"line {found.group(1)}, column {found.group(2)}: "
    elif found := re.search(r"\s*\(at end of document\)$", message):
        message = message[: found.start()]
        where = "end of file: "
    else:
        where = ""
    return f"{where}TOML syntax error: {message[:1].lower()}{message[1:]}"


# -- validation ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Parsed:
    opd: OpdSection
    kubernetes: KubernetesSection
    plugins: PluginsSection
    ha: HaSection
    webhooks: WebhooksSection


_OPD_KEYS = ("namespaces", "clusterwide", "log_level", "log_format", "listen", "shutdown_timeout")
_KUBERNETES_KEYS = ("kubeconfig", "context", "in_cluster")
_PLUGINS_KEYS = ("enable", "disable")
_MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_HA_KEYS = ("mode", "lease", "lease_namespace", "identity", "lease_duration", "renew_deadline", "retry_period",
            "shards")
_HOST = re.compile(r"\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:.]+|[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?")
_WEBHOOKS_KEYS = ("listen", "host", "url", "service", "cert_dir", "managed", "excluded_namespaces")
_SECTIONS = {"opd": _OPD_KEYS, "kubernetes": _KUBERNETES_KEYS, "plugins": _PLUGINS_KEYS, "ha": _HA_KEYS,
             "webhooks": _WEBHOOKS_KEYS}


class _Validator:
    """Walks the parsed document once, collecting problems instead of stopping at the first."""

    def __init__(self, problems: list[str], base: Path) -> None:
        self.problems = problems
        self.base = base

    def problem(self, where: str, text: str) -> None:
        self.problems.append(f"{where}: {text}")

    def document(self, doc: dict[str, Any]) -> _Parsed:
        # Sections are checked in the order the file has them, so problems read top to bottom.
        parsers: dict[str, Callable[[dict[str, Any]], Any]] = {
            "opd": self.opd_section, "kubernetes": self.kubernetes_section, "plugins": self.plugins_section,
            "ha": self.ha_section, "webhooks": self.webhooks_section,
        }
        parsed: dict[str, Any] = {}
        for key, value in doc.items():
            if key in _SECTIONS:
                if isinstance(value, dict):
                    parsed[key] = parsers[key](value)
                else:
                    self.problem(f"[{key}]", f"expected a table, got {toml_type(value)}")
            elif isinstance(value, dict):
                self.problem(f"[{key}]", unknown(key, list(_SECTIONS), "section"))
            else:
                home = [name for name, keys in _SECTIONS.items() if key in keys]
                if home:  # a key written above its section header: say where it belongs
                    self.problem(key, f"unknown top-level key (did you mean '[{home[0]}].{key}'?)")
                else:
                    self.problem(key, unknown(key, list(_SECTIONS), "top-level key"))
        return _Parsed(
            opd=parsed.get("opd") or OpdSection(),
            kubernetes=parsed.get("kubernetes") or KubernetesSection(),
            plugins=parsed.get("plugins") or PluginsSection(),
            ha=parsed.get("ha") or HaSection(),
            webhooks=parsed.get("webhooks") or WebhooksSection(),
        )

    def unknown_keys(self, where: str, table: Mapping[str, Any], known: Sequence[str]) -> None:
        for key in table:
            if key not in known:
                self.problem(f"{where}.{table_key(key)}", unknown(key, known))

    # Each getter returns None when the key is absent or wrong (the problem is recorded).

    def string(self, where: str, table: Mapping[str, Any], key: str) -> str | None:
        if key not in table:
            return None
        value = table[key]
        if not isinstance(value, str):
            self.problem(f"{where}.{key}", f"expected a string, got {toml_type(value)}")
            return None
        return value

    def boolean(self, where: str, table: Mapping[str, Any], key: str) -> bool | None:
        if key not in table:
            return None
        value = table[key]
        if not isinstance(value, bool):
            self.problem(f"{where}.{key}", f"expected true or false, got {toml_type(value)}")
            return None
        return value

    def choice(self, where: str, table: Mapping[str, Any], key: str, choices: Sequence[str]) -> str | None:
        value = self.string(where, table, key)
        if value is None:
            return None
        if value.lower() in choices:
            return value.lower()
        guess = closest(value, choices)
        hint = f" (did you mean {guess!r}?)" if guess else ""
        self.problem(f"{where}.{key}", f"expected one of {', '.join(choices)}, got {value!r}{hint}")
        return None

    def names(self, where: str, table: Mapping[str, Any], key: str,
              check: Callable[[str], str | None] | None = None) -> tuple[str, ...] | None:
        if key not in table:
            return None
        value = table[key]
        if not isinstance(value, list):
            self.problem(f"{where}.{key}", f"expected a list of strings, got {toml_type(value)}")
            return None
        good: list[str] = []
        for index, item in enumerate(value):
            if not isinstance(item, str):
                self.problem(f"{where}.{key}[{index}]", f"expected a string, got {toml_type(item)}")
            elif not item.strip():
                self.problem(f"{where}.{key}[{index}]", "empty string")
            elif check is not None and (trouble := check(item)):
                self.problem(f"{where}.{key}[{index}]", trouble)
            else:
                good.append(item)
        return tuple(good) if len(good) == len(value) else None

    def scope(self, where: str, table: Mapping[str, Any]) -> tuple[tuple[str, ...] | None, bool | None]:
        """``namespaces`` / ``clusterwide`` of one table, with their exclusions checked."""
        namespaces = self.names(where, table, "namespaces", check=_namespace_problem)
        clusterwide = self.boolean(where, table, "clusterwide")
        if namespaces == ():
            self.problem(f"{where}.namespaces", "empty list (to serve every namespace, set clusterwide = true)")
            namespaces = None
        if clusterwide is True and "namespaces" in table:
            self.problem(f"{where}.clusterwide", "true together with namespaces: set one or the other")
        if clusterwide is False and "namespaces" not in table:
            self.problem(f"{where}.clusterwide", "false needs namespaces = [...] in the same table")
        return namespaces, clusterwide

    def opd_section(self, table: dict[str, Any]) -> OpdSection:
        where = "[opd]"
        self.unknown_keys(where, table, _OPD_KEYS)
        namespaces, _ = self.scope(where, table)  # clusterwide: implied by no namespaces
        defaults = OpdSection()
        return OpdSection(
            namespaces=namespaces or (),
            clusterwide=not namespaces,
            log_level=self.choice(where, table, "log_level", LOG_LEVELS) or defaults.log_level,
            log_format=self.choice(where, table, "log_format", LOG_FORMATS) or defaults.log_format,
            listen=self.listen(where, table),
            shutdown_timeout=self.seconds(where, table, "shutdown_timeout") or defaults.shutdown_timeout,
        )

    def listen(self, where: str, table: Mapping[str, Any]) -> Listen | None:
        value = self.string(where, table, "listen")
        if not value:
            return None
        found = re.fullmatch(r"(?:\[([0-9A-Fa-f:.]+)\]|([^\s:\[\]]+)):(\d{1,5})", value)
        if not found or not 0 < int(found.group(3)) < 65536:
            self.problem(f"{where}.listen", f"expected \"HOST:PORT\" (e.g. \"127.0.0.1:8080\"), got {value!r}")
            return None
        return Listen(host=found.group(1) or found.group(2), port=int(found.group(3)))

    def seconds(self, where: str, table: Mapping[str, Any], key: str) -> float | None:
        if key not in table:
            return None
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.problem(f"{where}.{key}", f"expected a number of seconds, got {toml_type(value)}")
            return None
        if not (value > 0 and math.isfinite(value)):
            self.problem(f"{where}.{key}", f"expected a number of seconds > 0, got {value!r}")
            return None
        return float(value)

    def kubernetes_section(self, table: dict[str, Any]) -> KubernetesSection:
        where = "[kubernetes]"
        self.unknown_keys(where, table, _KUBERNETES_KEYS)
        kubeconfig = self.string(where, table, "kubeconfig")
        context = self.string(where, table, "context")
        in_cluster = self.boolean(where, table, "in_cluster")
        for key, text in (("kubeconfig", kubeconfig), ("context", context)):
            if text is not None and not text.strip():
                self.problem(f"{where}.{key}", "empty string (leave the key out for the default)")
        if in_cluster:
            for key in ("kubeconfig", "context"):
                if key in table:
                    self.problem(f"{where}.in_cluster", f"true together with {key}: set one or the other")
        path = None
        if kubeconfig and kubeconfig.strip():
            path = str(self.base / Path(kubeconfig).expanduser())  # relative to the file, as kubeconfig does it
        return KubernetesSection(kubeconfig=path, context=context or None, in_cluster=in_cluster)

    def ha_section(self, table: dict[str, Any]) -> HaSection:
        where = "[ha]"
        self.unknown_keys(where, table, _HA_KEYS)
        d = HaSection()
        names: dict[str, str | None] = {}
        for key in ("lease", "lease_namespace", "identity"):
            value = self.string(where, table, key)
            if key != "identity" and value is not None and not _DNS_NAME.fullmatch(value):
                self.problem(f"{where}.{key}", f"expected a DNS name (lowercase letters, digits, '-', '.'), "
                                               f"got {value!r}")
                value = None
            if value is not None and not value.strip():
                self.problem(f"{where}.{key}", "empty string (leave the key out for the default)")
                value = None
            names[key] = value
        shards = d.shards
        if "shards" in table:
            value = table["shards"]
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
                self.problem(f"{where}.shards", f"expected a whole number from 1 to 1024, got {value!r}")
            else:
                shards = value
        mode = self.choice(where, table, "mode", HA_MODES)
        section = HaSection(
            mode=mode or d.mode,
            lease=names["lease"] or d.lease,
            lease_namespace=names["lease_namespace"] or d.lease_namespace,
            identity=names["identity"],
            lease_duration=self.seconds(where, table, "lease_duration") or d.lease_duration,
            renew_deadline=self.seconds(where, table, "renew_deadline") or d.renew_deadline,
            retry_period=self.seconds(where, table, "retry_period") or d.retry_period,
            shards=shards,
        )
        # client-go's rules: the leader renews well before its lease can run out.
        if not section.lease_duration > section.renew_deadline > section.retry_period:
            self.problem(where, f"expected lease_duration > renew_deadline > retry_period, got "
                                f"{section.lease_duration:g} > {section.renew_deadline:g} > {section.retry_period:g}")
        if "shards" in table and section.mode != "shards" and (mode is not None or "mode" not in table):
            self.problem(f"{where}.shards", f"only with mode = \"shards\" (mode is {section.mode!r})")
        return section

    def webhooks_section(self, table: dict[str, Any]) -> WebhooksSection:
        where = "[webhooks]"
        self.unknown_keys(where, table, _WEBHOOKS_KEYS)
        d = WebhooksSection()
        host, url, service = (self.string(where, table, k) for k in ("host", "url", "service"))
        if host is not None and not _HOST.fullmatch(host):
            self.problem(f"{where}.host", f"expected a host name or an IP address (no scheme, port or path), "
                                          f"got {host!r}")
            host = None
        if url is not None and (not url.startswith("https://") or "?" in url or "#" in url or len(url) <= 8):
            self.problem(f"{where}.url", f"expected an https:// URL without query or fragment, got {url!r}")
            url = None
        if service is not None and not re.fullmatch(r"[a-z0-9-]+/[a-z0-9-]+(:\d{1,5})?", service):
            self.problem(f"{where}.service", f"expected \"namespace/name\" or \"namespace/name:port\", got {service!r}")
            service = None
        given = [k for k in ("host", "url", "service") if k in table]
        if len(given) > 1:
            self.problem(where, f"{' and '.join(given)}: set one of them (how the API server reaches opd)")
        managed = self.string(where, table, "managed")
        if managed and (not _DNS_NAME.fullmatch(managed) or "." not in managed):
            self.problem(f"{where}.managed", "expected a DNS name with a dot (webhooks are named "
                                             f"<handler>.<plugin>.<managed>), or \"\" for none; got {managed!r}")
            managed = None
        cert_dir = self.string(where, table, "cert_dir")
        if cert_dir is not None and not cert_dir.strip():
            self.problem(f"{where}.cert_dir", "empty string (leave the key out for certificates made per process)")
            cert_dir = None
        excluded = self.names(where, table, "excluded_namespaces", check=_namespace_name)
        return WebhooksSection(
            listen=self.listen(where, table) or d.listen, host=host, url=url, service=service,
            cert_dir=str(self.base / Path(cert_dir).expanduser()) if cert_dir else None,
            managed=managed if managed is not None else d.managed,
            excluded_namespaces=excluded if excluded is not None else d.excluded_namespaces,
        )

    def plugins_section(self, table: dict[str, Any]) -> PluginsSection:
        where = "[plugins]"
        for key, value in table.items():
            if key not in _PLUGINS_KEYS and not isinstance(value, dict):
                self.problem(f"{where}.{table_key(key)}", unknown(key, _PLUGINS_KEYS)
                             + " (a plugin's own settings go in a table [plugins.<name>])")
        enable = self.names(where, table, "enable")
        disable = self.names(where, table, "disable") or ()
        for name in sorted(set(enable or ()) & set(disable)):
            self.problem(f"{where}.disable", f"{name!r} is in enable too")
        tables = {
            name: self.plugin_table(name, value)
            for name, value in table.items()
            if name not in _PLUGINS_KEYS and isinstance(value, dict)
        }
        return PluginsSection(enable=enable, disable=disable, tables=MappingProxyType(tables))

    def plugin_table(self, name: str, table: dict[str, Any]) -> PluginTable:
        where = f"[plugins.{table_key(name)}]"
        namespaces, clusterwide = self.scope(where, table)
        isolation = self.choice(where, table, "isolation", ISOLATIONS)
        module, file = self.string(where, table, "module"), self.string(where, table, "file")
        if module is not None and not _MODULE.fullmatch(module):
            self.problem(f"{where}.module", f"expected a module's dotted name (e.g. \"operators.handlers\"), "
                                            f"got {module!r}")
            module = None
        if file is not None and not file.strip():
            self.problem(f"{where}.file", "empty string (a path to a Python file, e.g. \"handlers.py\")")
            file = None
        if module is not None and file is not None:
            self.problem(where, "module and file: set one of them (where the plugin's code is)")
        options = {k: v for k, v in table.items() if k not in PLUGIN_OWN_KEYS}
        return PluginTable(namespaces=namespaces, clusterwide=clusterwide, isolation=isolation,
                           options=MappingProxyType(options), module=module,
                           file=str(self.base / Path(file).expanduser()) if file else None)


def _namespace_problem(pattern: str) -> str | None:
    if _NAMESPACE_PATTERN.fullmatch(pattern):
        return None
    return f"{pattern!r} is not a namespace name or glob (lowercase letters, digits, '-', * ? [ ], a leading !)"
