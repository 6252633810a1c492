"""Operator plugins: found by entry point (group ``opd.plugins``), or named in the config file
(``[plugins.<name>] module = "pkg.handlers"`` or ``file = "handlers.py"``: a Kopf operator as it
is, with its module-level decorators), each loaded on its own, never fatal.

One broken plugin must not take the others down: a plugin that fails to import, raises in
a hook, has a table that does not fit its declared options, or asks for what its isolation
cannot give is recorded as ``failed`` with a one-line error, and the rest load as usual
(unless strict mode, ``OPD_STRICT_PLUGINS=1``, turns that into an error for the caller).

Plugins are trusted code: they run in opd's process with its credentials. ``[plugins]
enable`` is the allow-list; discovery warns when there is none, and names the installed
plugins it leaves out.
"""

from __future__ import annotations

import contextvars
import dataclasses
import enum
import importlib
import importlib.util
import json
import os
import re
import sys
import traceback
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from loguru import logger

from opd.engine import namespaces as ns_patterns
from opd.errors import ConfigError, OpdError
from opd.plugin import ENTRY_POINT_GROUP
from opd.plugin.manager import OptionsError, PluginHooks, plugin_config
from opd.plugin.naming import isolated_settings
from opd.plugin.options import Option, closest, table_key
from opd.registry import OperatorRegistry, Reason, set_default_registry
from opd.service.config import DaemonConfig, PluginConfig
from opd.settings import OperatorSettings

ENABLE_ENV = "OPD_PLUGINS"  # comma-separated allow-list; set but empty: no plugin at all
DISABLE_ENV = "OPD_DISABLED_PLUGINS"  # comma-separated deny-list
STRICT_ENV = "OPD_STRICT_PLUGINS"


class PluginError(OpdError):
    """Strict mode: a plugin failed, or an allow-listed plugin is not installed."""


class _Refused(Exception):
    """opd refuses the plugin (no hooks, a login handler it cannot honour): said as it is, without a type name."""


class Status(enum.StrEnum):
    LOADED = "loaded"
    FAILED = "failed"
    DISABLED = "disabled"


@dataclass(frozen=True)
class HandlerInfo:
    id: str
    reason: str
    resource: str


@dataclass(eq=False)
class Plugin:
    """One installed plugin: what its entry point says, whether it runs, and what it registered."""

    name: str
    value: str  # the entry point's object reference, "module:attr"; "module pkg.mod" or "file /path.py"
    distribution: str | None
    version: str | None
    config: PluginConfig
    registry: OperatorRegistry
    settings: OperatorSettings
    status: Status = Status.DISABLED
    disabled_by: str | None = None  # which rule disabled it, for people
    error: str | None = None  # one line: type, message, and where in the plugin
    # The table's problems against the plugin's options, one line each (``error`` joins them).
    problems: list[str] = field(default_factory=list)
    hooks: tuple[str, ...] = ()
    options: tuple[Option, ...] | None = None  # None: the plugin declares none (opd_options)
    manager: PluginHooks | None = None
    entry_point: metadata.EntryPoint | None = field(default=None, repr=False)

    @property
    def enabled(self) -> bool:
        return self.disabled_by is None

    @property
    def handlers(self) -> list[HandlerInfo]:
        return [HandlerInfo(id=h.id, reason=str(h.reason), resource=str(h.resource)) for h in self.registry.handlers]

    @property
    def resources(self) -> list[str]:
        return [str(ref) for ref in self.registry.resources()]

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``opd plugins --json``."""
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "entry_point": self.value,
            "enabled": self.enabled,
            "disabled_by": self.disabled_by,
            "status": str(self.status),
            "error": self.error,
            "hooks": list(self.hooks),
            "resources": self.resources,
            "handlers": [{"id": h.id, "reason": h.reason, "resource": h.resource} for h in self.handlers],
            "namespaces": list(self.config.namespaces),
            "clusterwide": self.config.clusterwide,
            "isolation": self.config.isolation,
            "prefix": self.settings.persistence.prefix,
            "status_field": self.settings.persistence.status_field,
            "results_field": self.settings.persistence.results_field,
        }


@dataclass
class Discovery:
    """Every installed plugin (sorted by name), and warnings about names that match none."""

    plugins: list[Plugin]
    warnings: list[str] = field(default_factory=list)
    # Allow-listed names that no installed plugin has: an error in strict mode.
    missing: list[str] = field(default_factory=list)

    def loaded(self) -> list[Plugin]:
        return [p for p in self.plugins if p.status is Status.LOADED]

    def failed(self) -> list[Plugin]:
        return [p for p in self.plugins if p.status is Status.FAILED]

    def check(self, strict: bool) -> None:
        """In strict mode, raise PluginError (one line) if any plugin failed or an allowed one is missing."""
        if not strict:
            return
        troubles = [f"plugin {p.name!r} failed: {p.error}" for p in self.failed()]
        troubles += [f"plugin {name!r} is enabled but not installed" for name in self.missing]
        if troubles:
            raise PluginError(f"strict mode ({STRICT_ENV}=1): " + "; ".join(troubles))


def strict_mode(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    text = env.get(STRICT_ENV, "").strip().lower()
    if text in ("", "0", "false", "no", "off"):
        return False
    if text in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"${STRICT_ENV}: expected 1 or 0, got {env[STRICT_ENV]!r}")


def installed() -> list[metadata.EntryPoint]:
    """The entry points of the group ``opd.plugins`` of every installed distribution."""
    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=_sort_key)


def _sort_key(ep: metadata.EntryPoint) -> tuple[str, str]:
    return ep.name, ep.dist.metadata["Name"] if ep.dist is not None else ""


def discover(config: DaemonConfig, env: Mapping[str, str] | None = None,
             entry_points: Iterable[metadata.EntryPoint] | None = None) -> Discovery:
    """Every installed plugin, enabled or not; nothing is imported yet (see ``load`` and ``load_all``)."""
    env = os.environ if env is None else env
    eps = sorted(installed() if entry_points is None else entry_points, key=_sort_key)
    plugins: list[Plugin] = []
    owners: dict[str, str | None] = {}
    for ep in eps:
        dist = ep.dist
        plugin = Plugin(
            name=ep.name,
            value=ep.value,
            distribution=dist.metadata["Name"] if dist is not None else None,
            version=dist.version if dist is not None else None,
            config=config.plugin(ep.name),
            registry=OperatorRegistry(),
            settings=isolated_settings(ep.name),
            entry_point=ep,
        )
        plugin.disabled_by = _disabled_by(ep.name, config, env)
        if ep.name in owners:  # the same name in two distributions: the first by distribution name keeps it
            plugin.status = Status.FAILED
            plugin.error = f"the plugin name {ep.name!r} is taken by distribution {owners[ep.name]}"
        owners.setdefault(ep.name, plugin.distribution)
        plugins.append(plugin)
    plugins += _configured(config, env, owners)
    plugins.sort(key=lambda p: p.name)  # stable: entry points of one name keep their order
    found = Discovery(plugins=plugins)
    _name_warnings(found, config, env)
    _trust_warnings(found, config, env)
    return found


def _configured(config: DaemonConfig, env: Mapping[str, str], owners: Mapping[str, str | None]) -> list[Plugin]:
    """The plugins that the config file names by module or file instead of an installed entry point."""
    found = []
    for name, table in config.plugins.tables.items():
        if table.module is None and table.file is None:
            continue
        plugin = Plugin(
            name=name,
            value=f"module {table.module}" if table.module else f"file {table.file}",
            distribution=None,
            version=None,
            config=config.plugin(name),
            registry=OperatorRegistry(),
            settings=isolated_settings(name),
        )
        plugin.disabled_by = _disabled_by(name, config, env)
        if name in owners:
            plugin.status = Status.FAILED
            plugin.error = (f"[plugins.{table_key(name)}] names a {'module' if table.module else 'file'}, and the "
                            f"installed distribution {owners[name]} has a plugin named {name!r} too: rename the table")
        found.append(plugin)
    return found


def load_all(config: DaemonConfig, env: Mapping[str, str] | None = None,
             entry_points: Iterable[metadata.EntryPoint] | None = None) -> Discovery:
    """Discover, then load every enabled plugin; failures are recorded on the plugins, never raised."""
    found = discover(config, env, entry_points)
    for plugin in found.plugins:
        if plugin.enabled and plugin.status is not Status.FAILED:
            load(plugin)
    _check_clashes(found.loaded())
    return found


def load(plugin: Plugin) -> None:
    """Import the plugin, check its table against its options, call its ``opd_register`` and
    ``opd_configure``, and refuse what its isolation cannot give it; sets status and error.

    Once per Plugin: to reload, ``discover`` again (fresh registries and settings). Python
    imports a module once per process, so a plugin whose handlers come only from module-level
    decorators registers nothing the second time: a reload should keep such a plugin's Plugin.
    """
    if plugin.entry_point is None and plugin.config.module is None and plugin.config.file is None:
        raise ValueError(f"plugin {plugin.name!r} has no entry point, module or file to load")
    ep = plugin.entry_point
    roots = _package_roots(ep) if ep is not None else [_module_name(plugin).split(".")[0]]
    # Module-level decorators without registry= run during the import: a fresh context whose
    # default registry is the plugin's own catches them (and keeps the process default clean).
    # Log lines of the plugin's import and hooks carry plugin=<name>.
    try:
        with logger.contextualize(plugin=plugin.name):
            contextvars.copy_context().run(_load_in_context, plugin)
    except _Refused as exc:
        plugin.status, plugin.error = Status.FAILED, str(exc)
    except OptionsError as exc:  # the user's table, not the plugin's code: no type, no place
        plugin.status, plugin.error, plugin.problems = Status.FAILED, str(exc), exc.problems
    except (Exception, SystemExit) as exc:  # a plugin's failure of any kind stays the plugin's
        plugin.status, plugin.error = Status.FAILED, describe_error(exc, roots)
    else:
        plugin.status = Status.LOADED
    if plugin.status is Status.FAILED:
        logger.bind(plugin=plugin.name).error(f"opd: plugin {plugin.name!r} failed: {plugin.error}")


def _load_in_context(plugin: Plugin) -> None:
    set_default_registry(plugin.registry)
    obj = plugin.entry_point.load() if plugin.entry_point is not None else _import(plugin)
    hooks = plugin.manager = PluginHooks(obj, plugin.name)
    plugin.hooks = hooks.implemented
    if not plugin.hooks and not plugin.registry.handlers:  # module-level decorators alone are a plugin too
        unmarked = [n for n in ("opd_register", "opd_configure") if callable(getattr(obj, n, None))]
        hint = f"{unmarked[0]} is not marked with @opd.hookimpl" if unmarked else "mark opd_register with @opd.hookimpl"
        where = plugin.entry_point.value if plugin.entry_point is not None else plugin.value
        raise _Refused(f"no opd hooks in {where}: {hint}")
    plugin.options = hooks.options()
    config = plugin_config(plugin.name, plugin.config.options, plugin.options)
    hooks.register(plugin.registry, config)
    hooks.configure(plugin.settings, config)
    _narrow(plugin, hooks.namespaces(config))
    _check_isolation(plugin)


_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_MAX_NAMESPACES = 1000


def _narrow(plugin: Plugin, needed: object) -> None:
    """Serve the plugin only the namespaces it says it needs (``opd_namespaces``) among those it is served."""
    if needed is None:
        return
    if (not isinstance(needed, list | tuple) or len(needed) > _MAX_NAMESPACES
            or not all(isinstance(n, str) and _NAMESPACE.fullmatch(n) for n in needed)):
        raise _Refused(f"opd_namespaces must return None or a list of at most {_MAX_NAMESPACES} namespace names, "
                       f"got {' '.join(repr(needed)[:80].split())}")
    config = plugin.config
    everywhere = config.clusterwide or not config.namespaces
    wanted = list(dict.fromkeys(needed))
    served = [n for n in wanted if everywhere or ns_patterns.matches(n, config.namespaces)]
    where = f"[plugins.{table_key(plugin.name)}].namespaces (else [opd].namespaces)"
    if not served:
        raise _Refused(f"it needs namespaces {', '.join(wanted) or '(none)'}, and {where} serves none of them")
    missing = [n for n in wanted if n not in served]
    if missing:
        logger.bind(plugin=plugin.name).warning(
            f"opd: plugin {plugin.name!r} needs namespaces that {where} does not serve: {', '.join(missing)}; "
            "its handlers see nothing there")
    plugin.config = dataclasses.replace(config, namespaces=tuple(served), clusterwide=False)


def _module_name(plugin: Plugin) -> str:
    """The module a configured plugin is imported as (a file's: one of its own per plugin)."""
    if plugin.config.module is not None:
        return plugin.config.module
    return "opd_plugin_" + re.sub(r"\W", "_", plugin.name)


def _import(plugin: Plugin) -> Any:
    """A configured plugin's module, its top-level code run now (so its decorators register into the
    plugin's registry), also when Python imported it before: a module is re-run, a file read anew."""
    name = _module_name(plugin)
    if plugin.config.module is not None:
        if name in sys.modules:
            return importlib.reload(sys.modules[name])
        return importlib.import_module(name)
    path = plugin.config.file
    assert path is not None
    if not os.path.isfile(path):
        raise _Refused(f"file {path}: no such file")
    folder = os.path.dirname(path)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # its sibling modules import as they would with `opd run FILE`
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise _Refused(f"file {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _check_isolation(plugin: Plugin) -> None:
    """What a shared plugin asks for but cannot have is refused, never silently left out."""
    logins = [h.id for h in plugin.registry.handlers if h.reason is Reason.LOGIN]
    if logins and plugin.config.isolation != "thread":
        # A shared plugin runs on the daemon's connection: its login handlers would never be called.
        raise _Refused(f"on.login handlers ({', '.join(logins)}) need isolation = \"thread\" in "
                       f"[plugins.{table_key(plugin.name)}] (a shared plugin uses the daemon's connection)")


def _disabled_by(name: str, config: DaemonConfig, env: Mapping[str, str]) -> str | None:
    rules = config.plugins
    source = str(config.path) if config.path else "config"
    allowed, denied = _env_names(env, ENABLE_ENV), _env_names(env, DISABLE_ENV)
    if allowed is not None and name not in allowed:
        return f"not in ${ENABLE_ENV}"
    if denied is not None and name in denied:
        return f"in ${DISABLE_ENV}"
    if rules.enable is not None and name not in rules.enable:
        return f"not in [plugins].enable ({source})"
    if name in rules.disable:
        return f"in [plugins].disable ({source})"
    return None


def _env_names(env: Mapping[str, str], var: str) -> set[str] | None:
    if var not in env:
        return None
    return {part.strip() for part in env[var].split(",") if part.strip()}


def _name_warnings(found: Discovery, config: DaemonConfig, env: Mapping[str, str]) -> None:
    names = [p.name for p in found.plugins]
    rules = config.plugins

    def unknown(where: str, listed: Iterable[str], allow_list: bool) -> None:
        for name in sorted(set(listed) - set(names)):
            guess = closest(name, names)
            hint = f" (did you mean {guess!r}?)" if guess else ""
            found.warnings.append(f"{where}: no installed plugin {name!r}{hint}")
            if allow_list:
                found.missing.append(name)

    unknown("[plugins].enable", rules.enable or (), True)
    unknown("[plugins].disable", rules.disable, False)
    unknown(f"${ENABLE_ENV}", _env_names(env, ENABLE_ENV) or (), True)
    unknown(f"${DISABLE_ENV}", _env_names(env, DISABLE_ENV) or (), False)
    for name in sorted(set(rules.tables) - set(names)):
        guess = closest(name, names)
        hint = f" (did you mean {guess!r}?)" if guess else ""
        found.warnings.append(f"[plugins.{name}]: no installed plugin {name!r}{hint}")
    found.missing = sorted(set(found.missing))


def _trust_warnings(found: Discovery, config: DaemonConfig, env: Mapping[str, str]) -> None:
    """Plugins are trusted code: say when any installed one may run, and which ones an allow-list leaves out."""
    if config.plugins.enable is None and ENABLE_ENV not in env:
        running = [p.name for p in found.plugins if p.enabled]
        if running:
            pinned = "[" + ", ".join(json.dumps(name) for name in running) + "]"
            found.warnings.append(
                f"[plugins].enable is not set: every installed plugin runs ({', '.join(running)}), in opd's "
                f"process and with its credentials; pin the list with [plugins] enable = {pinned}")
        return
    for rule in (f"not in ${ENABLE_ENV}", "not in [plugins].enable"):
        left = [p.name for p in found.plugins if p.disabled_by and p.disabled_by.startswith(rule)]
        if left:
            found.warnings.append(f"installed but {rule}, so not run: {', '.join(left)}")


def _check_clashes(plugins: Sequence[Plugin]) -> None:
    """Two plugins writing the same markers would undo each other's work: the later one fails."""
    seen: dict[tuple[str, str], str] = {}
    for plugin in plugins:
        persistence = plugin.settings.persistence
        # Markers and results are both fields of .status: one namespace for the two.
        names = [("prefix", "prefix", persistence.prefix), ("status", "status_field", persistence.status_field)]
        if persistence.results_field is not None:  # None: results at .status.<handler id>, shared by all
            names.append(("status", "results_field", persistence.results_field))
        for space, kind, value in names:
            other = seen.setdefault((space, value), plugin.name)
            if other != plugin.name and plugin.status is Status.LOADED:
                plugin.status = Status.FAILED
                plugin.error = f"persistence {kind} {value!r} is also plugin {other!r}'s: set another in opd_configure"
                logger.bind(plugin=plugin.name).error(f"opd: plugin {plugin.name!r} failed: {plugin.error}")


# -- one-line errors -----------------------------------------------------------------------------------------------


def describe_error(exc: BaseException, roots: Sequence[str] = ()) -> str:
    """``Type: message (at pkg/mod.py:12)``: the innermost place in the plugin's own code, on one line."""
    if isinstance(exc, SyntaxError):  # the import machinery raised it: the place is on the exception
        message = exc.msg or ""
        where = f"{_short_path(exc.filename, roots)}:{exc.lineno}" if exc.filename else None
    else:
        message = str(exc)
        where = _innermost(exc, roots)
    message = " ".join(message.split())
    if len(message) > 300:
        message = message[:299] + "…"
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return f"{text} (at {where})" if where else text


def _innermost(exc: BaseException, roots: Sequence[str]) -> str | None:
    where = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        module = frame.f_globals.get("__name__", "")
        if any(module == root or module.startswith(root + ".") for root in roots):
            where = f"{_short_path(frame.f_code.co_filename, roots)}:{lineno}"
    return where


def _short_path(filename: str, roots: Sequence[str]) -> str:
    """The file from its top-level package on (``pkg/mod.py``): where it is installed says little."""
    for root in roots:
        for marker in (f"{os.sep}{root}{os.sep}", f"{os.sep}{root}.py"):
            at = filename.rfind(marker)
            if at >= 0:
                return filename[at + 1:]
    return filename


def _package_roots(ep: metadata.EntryPoint) -> list[str]:
    """The top-level modules that are the plugin's code: the entry point's, and its distribution's."""
    roots = {ep.module.split(".")[0]}
    dist = ep.dist
    if dist is not None:
        top_level = dist.read_text("top_level.txt") or ""
        roots.update(line.strip() for line in top_level.splitlines() if line.strip())
    return sorted(roots)
