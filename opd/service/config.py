"""The daemon's TOML configuration (``/etc/opd/opd.toml``): read, validated, frozen.

Each section is a frozen dataclass whose fields are its keys, each declared once with ``key()``: its
default, what it takes and becomes, what unset means. Validation, defaults, ``opd config show``
(``opd.service.rendering``) and the documentation test read that declaration; plugins declare their
keys the same way with ``opd.plugin.options.Option``, checked once the plugin is loaded.

Validation reports every problem at once, one line each, naming the key path
(``[opd].namespaces: expected a list of strings, got integer``), so a person fixes
a file in one pass instead of one restart per mistake.
"""

from __future__ import annotations

import builtins
import copy
import dataclasses
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, cast

from opd.errors import ConfigError
from opd.plugin.options import MAX_NESTING, bounded, closest, mistyped, nesting, table_key, toml_type, unknown

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
HA_MODES = ("off", "leader", "shards")
DEFAULT_SHUTDOWN_TIMEOUT = 8.0


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


# -- the declaration: a Key per field of a section -----------------------------------------------------------------
# Why not Option: a plugin gets its values as TOML gives them, while opd's own keys become typed values (Listen,
# tuples, absolute paths, lowercase choices), are checked item by item and against each other (Rule), and include
# the names Option reserves for opd (namespaces, clusterwide...). A Key shares Option's type checks and words.

_KEY = "opd.key"  # where a field's Key is, in its metadata


@dataclass(frozen=True)
class Key:
    """How one key of opd's own tables is read and shown; declared on its section's field with ``key()``."""

    type: builtins.type | tuple[builtins.type, ...] | None  # TOML's, as an Option's; None: any (check says)
    items: builtins.type | None = None  # the type of a list's items
    words: str = ""  # what a value must be, when its type's words say too little
    each: Callable[[Any], str | None] | None = None  # what is wrong with one item of a list (said at [i])
    check: Callable[[Any], str | None] | None = None  # what is wrong with a value of the right type
    choices: tuple[str, ...] = ()  # written in any case, read lowercase
    path: bool = False  # a path: relative to the config file
    convert: Callable[[Any], Any] | None = None  # the value as the section holds it; None: the default
    unset: str = ""  # what no value (or an empty one) means: config show says it
    shown: Callable[[Any], bool] | None = None  # whether config show writes it, given the section

    def read(self, value: Any, base: Path) -> tuple[Any, list[tuple[str, str]]]:
        """The value as the section holds it (None: the default), or its problems as (key path suffix, text)."""
        if self.type is not None:
            types = self.type if isinstance(self.type, tuple) else (self.type,)
            if problem := mistyped(value, types, self.items, self.words):
                return None, [("", problem)]
        if self.items is not None:
            problems = [(f"[{i}]", p) for i, item in enumerate(value)
                        if (p := mistyped(item, (self.items,)) or (self.each(item) if self.each else None))]
            if problems:
                return None, problems
        if self.choices:
            if value.lower() not in self.choices:
                guess = closest(value, self.choices)
                hint = f" (did you mean {guess!r}?)" if guess else ""
                return None, [("", f"expected one of {', '.join(self.choices)}, got {value!r}{hint}")]
            value = value.lower()
        if self.check is not None and (problem := self.check(value)):
            return None, [("", problem)]
        if self.path:
            value = str(base / Path(value).expanduser())  # relative to the file, as kubeconfig does it
        return self.convert(value) if self.convert is not None else value, []


def key(spec: Key, unset: str = "") -> dict[str, Key]:
    """A section's field's metadata declaring it one of opd's keys: how it is read, what unset means."""
    return {_KEY: dataclasses.replace(spec, unset=unset) if unset else spec}


@cache
def keys(section: type) -> dict[str, tuple[Key, Any]]:
    """A section's declared keys, in order (checked and shown in it): name → (Key, default)."""
    return {f.name: (f.metadata[_KEY], f.default) for f in dataclasses.fields(section) if _KEY in f.metadata}


@dataclass(frozen=True)
class Given:
    """One table as rules see it: as written, its values (the default where absent or wrong), its wrong keys."""

    raw: Mapping[str, Any]
    values: Mapping[str, Any]
    bad: frozenset[str]


@dataclass(frozen=True)
class Rule:
    """What keys of one table must be together: checked as soon as the last key it reads is."""

    reads: tuple[str, ...]
    check: Callable[[Given], Iterable[tuple[str, str]]]  # problems as (key, or "" for the table; text)


def _one_of(*names: str, why: str) -> Rule:
    def check(t: Given) -> Iterable[tuple[str, str]]:
        given = [k for k in names if k in t.raw]
        return [("", f"{' and '.join(given)}: set one of them ({why})")] if len(given) > 1 else []
    return Rule(names, check)


def _not_with(flag: str, *others: str) -> Rule:
    return Rule((*others, flag), lambda t: [(flag, f"true together with {other}: set one or the other")
                                            for other in others if t.raw.get(flag) is True and other in t.raw])


def _filled(hint: str = "") -> Callable[[str], str | None]:
    return lambda text: None if text.strip() else "empty string" + (f" ({hint})" if hint else "")


def _matches(pattern: str, expected: str) -> Callable[[str], str | None]:
    fits = re.compile(pattern).fullmatch
    return lambda text: None if fits(text) else f"expected {expected}, got {text!r}"


def _listen(text: str) -> Listen | None:
    found = re.fullmatch(r"(?:\[([0-9A-Fa-f:.]+)\]|([^\s:\[\]]+)):(\d{1,5})", text)
    if not found or not 0 < int(found.group(3)) < 65536:
        return None
    return Listen(host=found.group(1) or found.group(2), port=int(found.group(3)))


def _names(each: Callable[[str], str | None] | None = None, **more: Any) -> Key:
    """A list of non-empty strings, each checked, held as a tuple."""
    return Key(list, items=str, each=lambda s: _filled()(s) or (each(s) if each else None), convert=tuple, **more)


_DNS_NAME = r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?"
_TEXT = Key(str, check=_filled("leave the key out for the default"))
_SECONDS = Key(float, words="a number of seconds", convert=float,
               check=lambda s: None if s > 0 and math.isfinite(s) else f"expected a number of seconds > 0, got {s!r}")
_ADDRESS = Key(str, convert=lambda text: _listen(text) if text else None,  # "": the default
               check=lambda text: None if not text or _listen(text) else
               f"expected \"HOST:PORT\" (e.g. \"127.0.0.1:8080\"), got {text!r}")
_LEASE_NAME = Key(str, check=_matches(_DNS_NAME, "a DNS name (lowercase letters, digits, '-', '.')"))


def _glob(pattern: str) -> str | None:
    # A namespace is a DNS label; globs add * ? [ ], and a leading ! negates.
    if re.fullmatch(r"!?[a-z0-9*?\[\]-]{1,63}", pattern):
        return None
    return f"{pattern!r} is not a namespace name or glob (lowercase letters, digits, '-', * ? [ ], a leading !)"


# namespaces / clusterwide, of [opd] and of a plugin's table: config show writes the one that applies.
_NAMESPACES = _names(_glob, check=lambda ns: None if ns else "empty list (to serve every namespace, set "
                     "clusterwide = true)", shown=lambda section: not section.clusterwide)
_CLUSTERWIDE = Key(bool, shown=lambda section: section.clusterwide)
_SCOPE = (_not_with("clusterwide", "namespaces"),
          Rule(("namespaces", "clusterwide"), lambda t: [
              ("clusterwide", "false needs namespaces = [...] in the same table")]
              if t.raw.get("clusterwide") is False and "namespaces" not in t.raw else []))


# -- the sections ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpdSection:
    # Empty namespaces: serve every namespace (the engine's default too).
    namespaces: tuple[str, ...] = field(default=(), metadata=key(_NAMESPACES))
    clusterwide: bool = field(default=True, metadata=key(_CLUSTERWIDE))  # written, it only confirms namespaces
    log_level: str = field(default="info", metadata=key(Key(str, choices=LOG_LEVELS)))
    log_format: str = field(default="auto", metadata=key(Key(str, choices=LOG_FORMATS)))
    listen: Listen | None = field(default=None, metadata=key(_ADDRESS, unset="off"))
    shutdown_timeout: float = field(default=DEFAULT_SHUTDOWN_TIMEOUT, metadata=key(_SECONDS))
    RULES: ClassVar[tuple[Rule, ...]] = _SCOPE

    def __post_init__(self) -> None:
        object.__setattr__(self, "clusterwide", not self.namespaces)


@dataclass(frozen=True)
class KubernetesSection:
    # The fields of opd.Login, so ``Login(**dataclasses.asdict(section))`` holds.
    # None everywhere: Login's own order (in-cluster, $KUBECONFIG, ~/.kube/config).
    kubeconfig: str | None = field(default=None, metadata=key(dataclasses.replace(_TEXT, path=True),
                                                              unset="$KUBECONFIG, then ~/.kube/config"))
    context: str | None = field(default=None, metadata=key(_TEXT, unset="the kubeconfig's current context"))
    in_cluster: bool | None = field(default=None, metadata=key(Key(bool), unset=(
        "in-cluster when a service account is mounted and $KUBECONFIG is not set")))
    RULES: ClassVar[tuple[Rule, ...]] = (_not_with("in_cluster", "kubeconfig", "context"),)


_SHARDS = Key(None, shown=lambda ha: ha.mode == "shards", check=lambda n: None if isinstance(n, int) and not
              isinstance(n, bool) and 1 <= n <= 1024 else f"expected a whole number from 1 to 1024, got {n!r}")


def _timings(t: Given) -> list[tuple[str, str]]:
    # client-go's rules: the leader renews well before its lease can run out.
    d, r, p = (t.values[k] for k in ("lease_duration", "renew_deadline", "retry_period"))
    return [] if d > r > p else [("", "expected lease_duration > renew_deadline > retry_period, got "
                                      f"{d:g} > {r:g} > {p:g}")]


def _shards_mode(t: Given) -> list[tuple[str, str]]:
    return [(name, f"only with mode = \"shards\" (mode is {t.values['mode']!r})") for name in ("shards", "filtering")
            if name in t.raw and "mode" not in t.bad and t.values["mode"] != "shards"]


@dataclass(frozen=True)
class HaSection:
    """Replicas coordinated through coordination.k8s.io/v1 Leases (timings: client-go's defaults)."""

    lease: str = field(default="opd", metadata=key(_LEASE_NAME))  # the Lease's name (shards: <lease>-<i>)
    lease_namespace: str = field(default="default", metadata=key(_LEASE_NAME))
    identity: str | None = field(default=None, metadata=key(_TEXT, unset="$OPD_HA_IDENTITY, else <hostname>_<UUID>"))
    shards: int = field(default=1, metadata=key(_SHARDS))
    # off: one process does everything; leader: active/standby; shards: split the objects
    mode: str = field(default="off", metadata=key(Key(str, choices=HA_MODES)))
    lease_duration: float = field(default=15.0, metadata=key(_SECONDS))
    renew_deadline: float = field(default=10.0, metadata=key(_SECONDS))
    retry_period: float = field(default=2.0, metadata=key(_SECONDS))
    # shards: how each replica gets only its shards' events (opd.ha.settings.FILTERINGS)
    filtering: str = field(default="auto", metadata=key(Key(str, choices=("auto", "server", "labels", "client"),
                                                                shown=lambda ha: ha.mode == "shards")))
    RULES: ClassVar[tuple[Rule, ...]] = (Rule(("shards", "filtering", "mode"), _shards_mode),
                       Rule(("lease_duration", "renew_deadline", "retry_period"), _timings))


_HOST = Key(str, check=_matches(r"\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:.]+|[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?",
                                "a host name or an IP address (no scheme, port or path)"))
_URL = Key(str, check=lambda url: None if url.startswith("https://") and len(url) > 8 and not {"?", "#"} & set(url)
           else f"expected an https:// URL without query or fragment, got {url!r}")
_SERVICE = Key(str, check=_matches(r"[a-z0-9-]+/[a-z0-9-]+(:\d{1,5})?",
                                   "\"namespace/name\" or \"namespace/name:port\""))
_MANAGED = Key(str, check=lambda name: None if not name or (re.fullmatch(_DNS_NAME, name) and "." in name) else
               "expected a DNS name with a dot (webhooks are named <handler>.<plugin>.<managed>), or \"\" for none; "
               f"got {name!r}")
_CERT_DIR = Key(str, check=_filled("leave the key out for certificates made per process"), path=True)
_EXCLUDED = _names(lambda name: None if re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", name) else
                   f"expected a namespace's name (a DNS label), got {name!r}")


@dataclass(frozen=True)
class WebhooksSection:
    """The one HTTPS server for every plugin's admission handlers and converters (a path each)."""

    # How the API server reaches it, one of: the name or address it dials (None: listen's, localhost for
    # 0.0.0.0), the base URL it dials (a proxy in front), a Service in front: "namespace/name[:port]".
    host: str | None = field(default=None, metadata=key(_HOST, unset="the listen address; localhost for 0.0.0.0"))
    url: str | None = field(default=None, metadata=key(_URL, unset="or a proxy's base URL"))
    service: str | None = field(default=None, metadata=key(_SERVICE, unset="or a Service in front of opd"))
    managed: str = field(default="opd.dev", metadata=key(_MANAGED, unset="not managed"))  # the configurations' name
    cert_dir: str | None = field(default=None, metadata=key(_CERT_DIR, unset="a CA and certificate made per process"))
    # Namespaces the managed webhooks leave alone (namespaceSelector), besides opd's own in a pod:
    # a failing webhook must not block the cluster's own components or opd's pods.
    excluded_namespaces: tuple[str, ...] = field(default=("kube-system",),
                                                 metadata=key(_EXCLUDED, unset="none but opd's own, in a pod"))
    listen: Listen = field(default=Listen("127.0.0.1", 9443), metadata=key(_ADDRESS))
    RULES: ClassVar[tuple[Rule, ...]] = (_one_of("host", "url", "service", why="how the API server reaches opd"),)


_MODULE = Key(str, check=_matches(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*",
                                  "a module's dotted name (e.g. \"operators.handlers\")"))
_FILE = Key(str, check=_filled("a path to a Python file, e.g. \"handlers.py\""), path=True)


@dataclass(frozen=True)
class PluginTable:
    """``[plugins.<name>]`` as written: opd's keys (None when absent) and the plugin's own options."""

    namespaces: tuple[str, ...] | None = field(default=None, metadata=key(_NAMESPACES))
    clusterwide: bool | None = field(default=None, metadata=key(_CLUSTERWIDE))
    isolation: str | None = field(default=None, metadata=key(Key(str, choices=ISOLATIONS)))
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    # A plugin without an entry point (a Kopf operator as it is): its module's dotted name, or its file.
    module: str | None = field(default=None, metadata=key(_MODULE))
    file: str | None = field(default=None, metadata=key(_FILE))  # absolute: relative to the config file
    RULES: ClassVar[tuple[Rule, ...]] = (*_SCOPE, _one_of("module", "file", why="where the plugin's code is"))


# The keys opd reads (and removes) from a plugin's own table [plugins.<name>]; Option refuses them (RESERVED).
PLUGIN_OWN_KEYS = tuple(keys(PluginTable))


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
    # None: no allow-list, every installed plugin
    enable: tuple[str, ...] | None = field(default=None, metadata=key(_names(), unset="every installed plugin"))
    disable: tuple[str, ...] = field(default=(), metadata=key(_names()))
    tables: Mapping[str, PluginTable] = field(default_factory=lambda: MappingProxyType({}))
    RULES: ClassVar[tuple[Rule, ...]] = (Rule(("enable", "disable"), lambda t: [
        ("disable", f"{name!r} is in enable too") for name in sorted(set(t.values["enable"] or ())
                                                                     & set(t.values["disable"]))]),)


@dataclass(frozen=True)
class DaemonConfig:
    # The sections, in the order config show writes them (plugins last: their tables follow).
    opd: OpdSection = field(default_factory=OpdSection)
    kubernetes: KubernetesSection = field(default_factory=KubernetesSection)
    ha: HaSection = field(default_factory=HaSection)
    webhooks: WebhooksSection = field(default_factory=WebhooksSection)
    plugins: PluginsSection = field(default_factory=PluginsSection)
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


# The sections by name: DaemonConfig's fields made by their section's class.
SECTIONS: dict[str, type] = {f.name: cast(type, f.default_factory) for f in dataclasses.fields(DaemonConfig)
                             if f.default_factory is not dataclasses.MISSING}
_HA_KEYS, _WEBHOOKS_KEYS = tuple(keys(HaSection)), tuple(keys(WebhooksSection))  # as the tests name them


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
    config = DaemonConfig(**_document(document, base, problems), path=path)
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


# -- validation: every table read against its section's declaration -----------------------------------------------


def _document(doc: dict[str, Any], base: Path, problems: list[str]) -> dict[str, Any]:
    """The sections of a parsed document, checked in the order the file has them (problems read top to bottom)."""
    sections: dict[str, Any] = {}
    for name, value in doc.items():
        if name in SECTIONS and isinstance(value, dict):
            sections[name] = (_plugins(value, base, problems) if name == "plugins" else
                              SECTIONS[name](**_table(SECTIONS[name], f"[{name}]", value, base, problems)))
        elif name in SECTIONS:
            problems.append(f"[{name}]: expected a table, got {toml_type(value)}")
        elif isinstance(value, dict):
            problems.append(f"[{name}]: {unknown(name, list(SECTIONS), 'section')}")
        elif home := [section for section, cls in SECTIONS.items() if name in keys(cls)]:
            # a key written above its section header: say where it belongs
            problems.append(f"{name}: unknown top-level key (did you mean '[{home[0]}].{name}'?)")
        else:
            problems.append(f"{name}: {unknown(name, list(SECTIONS), 'top-level key')}")
    return sections


def _table(section: type, where: str, table: Mapping[str, Any], base: Path, problems: list[str],
           others: Callable[[Any], bool] = lambda value: False, hint: str = "") -> dict[str, Any]:
    """One table read against its section's keys: each key's value (its default where absent or wrong), every
    problem added. A key not declared is unknown, unless ``others`` takes its value (the caller's then)."""
    declared = keys(section)
    problems += [f"{where}.{table_key(name)}: {unknown(name, list(declared))}{hint}"
                 for name, value in table.items() if name not in declared and not others(value)]
    order = list(declared)
    rules = [(max(order.index(name) for name in rule.reads), rule) for rule in getattr(section, "RULES", ())]
    values: dict[str, Any] = {}
    bad: set[str] = set()
    for index, (name, (spec, default)) in enumerate(declared.items()):
        value, troubles = spec.read(table[name], base) if name in table else (None, [])
        problems += [f"{where}.{name}{suffix}: {text}" for suffix, text in troubles]
        bad.update([name] if troubles else [])
        values[name] = default if value is None else value
        for at, rule in rules:
            if at == index:
                given = Given(table, values, frozenset(bad))
                problems += [f"{where}.{k}: {text}" if k else f"{where}: {text}" for k, text in rule.check(given)]
    return values


def _plugins(table: dict[str, Any], base: Path, problems: list[str]) -> PluginsSection:
    """[plugins]: its keys, and a table per plugin (opd's keys of it read, the rest the plugin's options)."""
    values = _table(PluginsSection, "[plugins]", table, base, problems, others=lambda value: isinstance(value, dict),
                    hint=" (a plugin's own settings go in a table [plugins.<name>])")
    tables = {}
    for name, value in table.items():
        if name not in values and isinstance(value, dict):
            own = _table(PluginTable, f"[plugins.{table_key(name)}]", value, base, problems, others=lambda _: True)
            options = {k: v for k, v in value.items() if k not in PLUGIN_OWN_KEYS}
            tables[name] = PluginTable(**own, options=MappingProxyType(options))
    return PluginsSection(**values, tables=MappingProxyType(tables))
