"""The ``opd`` command line (click).

Every user-caused error ends as one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from opd._version import __version__
from opd.errors import OpdError
from opd.localcluster import build, cluster

if TYPE_CHECKING:
    from collections.abc import Mapping

    from opd.service.config import DaemonConfig
    from opd.service.plugins import Discovery, Plugin


class _Group(click.Group):
    """Turns opd's own errors into click's one-line ``Error: ...`` and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OpdError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="opd")
def main() -> None:
    """opd: a Kubernetes operator daemon for Python."""


@main.group("local-cluster", cls=_Group)
def local_cluster() -> None:
    """A local control plane (etcd + kube-apiserver) for trying opd and for tests."""


@local_cluster.command("install")
@click.option("--force", is_flag=True, help="Rebuild even when the cache has the binaries.")
def lc_install(force: bool) -> None:
    """Build kube-apiserver from Debian's sources into opd's cache (once, 5-10 minutes; says what it installs)."""
    found = build.install(force=force, progress=lambda line: click.echo(line, err=True))
    click.echo(f"kube-apiserver: {found.kube_apiserver}")
    click.echo(f"etcd: {found.etcd}")
    kcm = found.kube_controller_manager
    click.echo(f"kube-controller-manager: {kcm if kcm else 'not built'}")


@local_cluster.command("start")
@click.option("-d", "--detach", is_flag=True, help="Return once ready; 'opd local-cluster stop' stops it.")
def lc_start(detach: bool) -> None:
    """Start the local cluster; in the foreground until Ctrl-C unless --detach."""
    click.echo("==> starting etcd and kube-apiserver", err=True)
    cp = cluster.start(detach=detach)
    if isinstance(cp, cluster.ClusterState):
        click.echo(f"==> already running at {cp.server}", err=True)
        click.echo(f"export KUBECONFIG={cp.kubeconfig}")
        return
    click.echo(f"==> ready at {cp.server}", err=True)
    click.echo(f"export KUBECONFIG={cp.kubeconfig}")
    if detach:
        return
    click.echo("==> running; Ctrl-C stops it", err=True)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            signal.pause()
    finally:
        cp.stop()
        cluster.stop()
        click.echo("==> stopped", err=True)


@local_cluster.command("stop")
def lc_stop() -> None:
    """Stop a detached local cluster (by the PIDs it recorded)."""
    stopped = cluster.stop()
    click.echo("stopped: " + ", ".join(stopped) if stopped else "not running")


@local_cluster.command("status")
def lc_status() -> None:
    """Say whether the local cluster runs, where, and with which PIDs; exit 1 if not."""
    state = cluster.read_state()
    running = state.running() if state else {}
    if state is None or not running:
        click.echo("not running")
        sys.exit(1)
    click.echo(f"running at {state.server}")
    click.echo(f"export KUBECONFIG={state.kubeconfig}")
    for name, pid in running.items():
        click.echo(f"  {name}: pid {pid}")


# -- the daemon's configuration and plugins ------------------------------------------------------------------------
# Imported inside the commands: the daemon's modules load only for the commands that use them.

_CONFIG_HELP = "The config file (default: $OPD_CONFIG, else /etc/opd/opd.toml if it exists)."


def _load_config_or_exit(path: Path | None) -> DaemonConfig:
    """The config, or one line per problem on stderr (each prefixed with the path) and exit 1."""
    from opd.service import config

    try:
        return config.load(path)
    except config.ConfigFileError as exc:
        for line in exc.lines():
            click.echo(line, err=True)
        sys.exit(1)


def _load_plugins(cfg: DaemonConfig, env: Mapping[str, str] | None = None) -> Discovery:
    """Every enabled plugin loaded (imported, its table checked, its hooks called), quietly: no cluster needed."""
    from loguru import logger

    from opd.logs import setup_logging
    from opd.service import plugins

    setup_logging(cfg.opd.log_level, "text")  # a command for people: the daemon's format is not wanted here
    logger.disable("opd.service.plugins")  # its failure lines repeat what the command says
    try:
        return plugins.load_all(cfg, env)
    finally:
        logger.enable("opd.service.plugins")


@main.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, sorted by name.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), help=_CONFIG_HELP)
def plugins_cmd(as_json: bool, config_path: Path | None) -> None:
    """List the installed operator plugins: status, errors, handlers.

    Loads every enabled plugin (no cluster needed); exits 1 after the listing when one cannot
    load. Plugins are enabled by [plugins] enable/disable in the config, and narrowed by
    OPD_PLUGINS (a comma list; empty: none) and OPD_DISABLED_PLUGINS.
    """
    from opd.service import plugins

    cfg = _load_config_or_exit(config_path)
    strict = plugins.strict_mode()
    found = _load_plugins(cfg)
    for warning in found.warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        click.echo(json.dumps([p.to_dict() for p in found.plugins], indent=2))
    else:
        click.echo(_plugins_table(found.plugins))
    found.check(strict)
    failed = found.failed()
    if failed:
        raise click.ClickException(f"{len(failed)} plugin(s) cannot load: {', '.join(p.name for p in failed)}")


def _plugins_table(found: Sequence[Plugin]) -> str:
    from opd.service.plugins import Status

    if not found:
        return "no plugins installed (none declares an entry point in the group 'opd.plugins')"
    colours = {Status.LOADED: "green", Status.FAILED: "red", Status.DISABLED: "yellow"}
    rows = [("NAME", "STATUS", "DISTRIBUTION", "ENTRY POINT")]
    rows += [(p.name, str(p.status), f"{p.distribution or '?'} {p.version or ''}".strip(), p.value) for p in found]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join([*(cell.ljust(width) for cell, width in zip(rows[0], widths, strict=False)), rows[0][3]])]
    for plugin, row in zip(found, rows[1:], strict=True):
        status = click.style(row[1].ljust(widths[1]), fg=colours[plugin.status])
        lines.append(f"{row[0].ljust(widths[0])}  {status}  {row[2].ljust(widths[2])}  {row[3]}")
        for error in plugin.problems or ([plugin.error] if plugin.error else []):
            lines.append(f"    error: {error}")
        if plugin.disabled_by:
            lines.append(f"    disabled: {plugin.disabled_by}")
        if plugin.hooks:
            lines.append(f"    hooks: {', '.join(plugin.hooks)}")
        if plugin.status is not Status.LOADED:
            continue
        handlers = [f"{h.id} ({h.reason} {h.resource})" for h in plugin.handlers]
        lines.append(f"    handlers: {', '.join(handlers) if handlers else 'none'}")
        scope = "cluster-wide" if plugin.config.clusterwide else "namespaces " + ", ".join(plugin.config.namespaces)
        persistence = plugin.settings.persistence
        results = f".status.{persistence.results_field}" if persistence.results_field else ".status"
        lines.append(f"    runs: {scope}; isolation {plugin.config.isolation}; "
                     f"markers {persistence.prefix}, .status.{persistence.status_field}; results {results}")
    counts = {s: sum(p.status is s for p in found) for s in Status}
    lines.append("")
    lines.append(f"{len(found)} plugin(s): " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)


@main.group("config", cls=_Group)
def config_group() -> None:
    """Check or show the daemon's configuration file (opd.toml)."""


@config_group.command("check")
@click.argument("path", required=False, type=click.Path(path_type=Path))
def config_check(path: Path | None) -> None:
    """Validate the config file, and each enabled plugin's table against the options it declares.

    Prints 'PATH: ok', or every problem (one line each, on stderr) and exits 1; a plugin that
    cannot load is a problem too. The file alone decides which plugins are enabled here
    (OPD_PLUGINS and OPD_DISABLED_PLUGINS are not read).
    """
    from opd.service import config

    target, _ = config.resolve_path(path)
    problems: list[str] = []
    try:
        cfg = config.load(path)
    except config.ConfigFileError as exc:
        if exc.partial is None:  # unreadable, or not TOML: nothing more to check
            for line in exc.lines():
                click.echo(line, err=True)
            sys.exit(1)
        problems += exc.problems
        cfg = exc.partial  # what the rest of the file says: the plugins' tables are checked in the same pass
    found = _load_plugins(cfg, env={})
    # Plugin names that match no installed plugin are likely typos: said, but not an error.
    for warning in found.warnings:
        click.echo(f"{target}: warning: {warning}", err=True)
    for plugin in found.failed():
        problems += plugin.problems or [f"plugin {plugin.name!r} cannot load: {plugin.error}"]
    if problems:
        for problem in problems:
            click.echo(f"{target}: {problem}", err=True)
        sys.exit(1)
    click.echo(f"{target}: ok" if cfg.path else f"{target}: ok (no such file: the defaults apply)")


@config_group.command("show")
@click.argument("path", required=False, type=click.Path(path_type=Path))
def config_show(path: Path | None) -> None:
    """Print the effective configuration as TOML: defaults included (the plugins' too), secrets redacted."""
    from opd.service import config, rendering

    target, _ = config.resolve_path(path)
    cfg = _load_config_or_exit(path)
    found = _load_plugins(cfg, env={})
    for plugin in found.failed():  # shown anyway: as much as is known, with why it is not more
        for problem in plugin.problems or [f"plugin {plugin.name!r} cannot load: {plugin.error}"]:
            click.echo(f"{target}: warning: {problem}", err=True)
    options = {p.name: p.options for p in found.plugins if p.options is not None}
    click.echo(rendering.render(cfg, options), nl=False)


# -- running in a cluster: RBAC and manifests ----------------------------------------------------------------------


def _k8s_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    import re

    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", value):
        raise click.BadParameter(f"{value!r} is not a Kubernetes name (lowercase letters, digits, '-')")
    return value


def _cluster_options(command: Any) -> Any:
    """The options ``opd rbac`` and ``opd manifests`` share."""
    for option in reversed([
        click.option("--config", "config_path", type=click.Path(path_type=Path), help=_CONFIG_HELP),
        click.option("--name", default="opd", show_default=True, callback=_k8s_name,
                     help="The ServiceAccount's name (and its roles', bindings', ConfigMap's, Deployment's)."),
        click.option("--namespace", default="opd", show_default=True, callback=_k8s_name,
                     help="The ServiceAccount's namespace (it must exist)."),
        click.option("--kubeconfig", type=click.Path(path_type=Path),
                     help="The cluster to resolve resources against (default: [kubernetes] of the config)."),
        click.option("--context", help="The kubeconfig context to use."),
        click.option("--strict", is_flag=True,
                     help="Exit 1, printing nothing, when a rule has wildcards, escalate, bind, impersonate or "
                          "Secrets in every namespace (always said on stderr, and marked RISK in the YAML)."),
    ]):
        command = option(command)
    return command


def _discovery_login(cfg: DaemonConfig, kubeconfig: Path | None, context: str | None) -> Any:
    import dataclasses

    from opd.kube.credentials import Login

    if kubeconfig is not None:
        return Login(kubeconfig=str(kubeconfig), context=context, in_cluster=False)
    login = Login(**dataclasses.asdict(cfg.kubernetes))
    if context is not None:
        login = dataclasses.replace(login, context=context)
    if login.kubeconfig is None and not login.in_cluster:
        _use_local_cluster_if_nothing_else()
    return login


def _plugins_for_rbac(cfg: DaemonConfig) -> Discovery:
    found = _load_plugins(cfg, env={})
    for warning in found.warnings:
        click.echo(f"warning: {warning}", err=True)
    return found


def _print(output: Any, strict: bool) -> None:
    """The warnings and the risky rules (one line each) on stderr; the YAML unless --strict refuses it."""
    for warning in output.warnings:
        click.echo(f"warning: {warning}", err=True)
    for line in output.flagged:
        click.echo(f"warning: risky rule: {line}", err=True)
    output.refuse_if_strict(strict)
    click.echo(output.text, nl=False)


@main.command("rbac")
@_cluster_options
def rbac_cmd(config_path: Path | None, name: str, namespace: str, kubeconfig: Path | None,
             context: str | None, strict: bool) -> None:
    """Print the RBAC that the enabled plugins need, as YAML for kubectl apply.

    A ServiceAccount, a ClusterRole (or Roles, where every plugin that needs a rule serves
    namespaces by name) and their bindings: list, watch and patch of what the handlers serve,
    their status, Events, namespaces for namespace patterns, the Leases of [ha], and what each
    plugin declares for its own calls (opd_rbac). Resources are resolved against the cluster
    (required). The config file alone decides which plugins are enabled (not OPD_PLUGINS).
    Rules with wildcards, escalate, bind, impersonate or Secrets in every namespace are marked
    RISK and said on stderr; --strict refuses them.
    """
    from opd.rbac import generate

    cfg = _load_config_or_exit(config_path)
    found = _plugins_for_rbac(cfg)
    login = _discovery_login(cfg, kubeconfig, context)
    _print(generate.rbac(cfg, found, login, name=name, namespace=namespace), strict)


@main.command("manifests")
@_cluster_options
@click.option("--image", default=f"opd:{__version__}", show_default=True,
              help="The container image (built from etc/Containerfile).")
def manifests_cmd(config_path: Path | None, name: str, namespace: str, kubeconfig: Path | None,
                  context: str | None, strict: bool, image: str) -> None:
    """Print what runs opd in a cluster, as YAML for kubectl apply: the RBAC of 'opd rbac', the
    config file as a ConfigMap (its secrets in a Secret beside it), and a Deployment running
    'opd start' with them.

    The ConfigMap's copy of the config listens on 0.0.0.0 (the probes and /metrics are reached
    from outside the container) and uses the pod's service account ([kubernetes] in_cluster);
    with [ha], the Lease is named after the deployment, in its namespace, unless the file names
    them, and each pod's identity is its name.
    """
    from opd.rbac import generate

    cfg = _load_config_or_exit(config_path)
    found = _plugins_for_rbac(cfg)
    login = _discovery_login(cfg, kubeconfig, context)
    _print(generate.manifests(cfg, found, login, name=name, namespace=namespace, image=image), strict)


# -- running operators ---------------------------------------------------------------------------------------------

_LOG_LEVELS = click.Choice(["trace", "debug", "info", "warning", "error"])
_LOG_FORMATS = click.Choice(["auto", "text", "json", "journal"])


def _leave_without_waiting_for_handler_threads() -> None:
    """A sync handler still running past the shutdown bound cannot be cancelled, and Python would
    wait for its thread at exit: the stop bound holds only if the process leaves without it."""
    import os
    import threading

    from loguru import logger

    stuck = [t for t in threading.enumerate() if t.name.startswith("opd-handler") and t.is_alive()]
    for thread in stuck:
        thread.join(0.2)  # idle pool threads end by themselves
    names = [t.name for t in stuck if t.is_alive()]
    if names:
        logger.error(f"opd: sync handlers still running past the shutdown bound, abandoned: {', '.join(names)}")
        logger.complete()
        sys.stderr.flush()
        os._exit(0)


def _use_local_cluster_if_nothing_else() -> None:
    """With no cluster configured at all, the local one (`opd local-cluster start`), if it runs."""
    import os

    from loguru import logger

    configured = os.environ.get("KUBECONFIG") or os.environ.get("KUBERNETES_SERVICE_HOST")
    if configured or (Path.home() / ".kube" / "config").exists():
        return
    state = cluster.read_state()
    if state is not None and state.running():
        logger.info(f"opd: no cluster configured: using the local cluster at {state.server}")
        os.environ["KUBECONFIG"] = str(state.kubeconfig)


@main.command("start")
@click.option("--config", "config_path", type=click.Path(path_type=Path), help=_CONFIG_HELP)
@click.option("-v", "--verbose", is_flag=True, help="Log at debug level (overrides [opd].log_level).")
@click.option("--log-format", type=_LOG_FORMATS, help="Overrides [opd].log_format.")
def start_cmd(config_path: Path | None, verbose: bool, log_format: str | None) -> None:
    """Run every enabled plugin in the foreground (as the systemd service does).

    SIGTERM/SIGINT stop it gracefully; SIGHUP re-reads the config (the log level and
    format too) and restarts only the plugins whose configuration changed. With systemd:
    READY=1, STOPPING=1, WATCHDOG=1 and STATUS= go to $NOTIFY_SOCKET.
    """
    from opd.logs import setup_logging

    def logging_for(config: DaemonConfig) -> None:  # at start and at each SIGHUP; the options still win
        setup_logging("debug" if verbose else config.opd.log_level, log_format or config.opd.log_format)

    cfg = _load_config_or_exit(config_path)
    logging_for(cfg)
    if cfg.kubernetes.kubeconfig is None and not cfg.kubernetes.in_cluster:
        _use_local_cluster_if_nothing_else()
    from opd.service import foreground

    foreground.start(cfg, setup_logging=logging_for)
    _leave_without_waiting_for_handler_threads()


_RUN_LOG_FORMATS = click.Choice(["auto", "text", "json", "journal", "plain", "full"])  # Kopf's plain, full: text
_NO_PEERING = ("opd run does not peer with other operators (Kopf's KopfPeering): two of them would both "
               "handle every object; run one (--standalone), or replicas with --ha (Leases)")


_HA_FLAGS = {"lease": "--lease", "namespace": "--lease-namespace", "identity": "--identity", "shards": "--shards",
             "lease_duration": "--lease-duration", "renew_deadline": "--renew-deadline",
             "retry_period": "--retry-period", "mode": "--ha", "filtering": "--shard-filtering"}


def _ha_settings(mode: str, **given: Any) -> Any:
    """``opd run``'s --ha flags as opd.ha settings (None: --ha off); a usage error names the flag."""
    from opd.errors import ConfigError
    from opd.ha.settings import HaSettings

    flags = {key: value for key, value in given.items() if value is not None}
    if mode == "off":
        if flags:
            raise click.UsageError(f"{_HA_FLAGS[next(iter(flags))]}: only with --ha leader or --ha shards")
        return None
    if mode == "shards" and "shards" not in flags:
        raise click.UsageError("--shards: required with --ha shards")
    for key in ("shards", "filtering"):
        if mode != "shards" and key in flags:
            raise click.UsageError(f"{_HA_FLAGS[key]}: only with --ha shards")
    try:
        return HaSettings(mode=mode, **flags).check(_HA_FLAGS)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


@main.command("run")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option("-m", "--module", "modules", multiple=True, help="Import handlers from this module (repeatable).")
@click.option("-n", "--namespace", "namespaces", multiple=True,
              help="Serve this namespace; globs and !negations allowed (repeatable).")
@click.option("-A", "--all-namespaces", "clusterwide", is_flag=True, help="Serve every namespace.")
@click.option("--kubeconfig", type=click.Path(path_type=Path), help="Default: in-cluster, $KUBECONFIG, ~/.kube/config.")
@click.option("--context", help="The kubeconfig context to use.")
@click.option("-v", "--verbose", is_flag=True, help="Log at debug level.")
@click.option("-d", "--debug", is_flag=True, help="As --verbose (Kopf's flag; libraries' own debug lines stay off).")
@click.option("-q", "--quiet", is_flag=True, help="Log warnings and errors only.")
@click.option("--log-format", type=_RUN_LOG_FORMATS, default="auto", show_default=True,
              help="Kopf's 'plain' and 'full' mean 'text'.")
@click.option("-L", "--liveness", "liveness_url", metavar="URL",
              help="Serve the probe handlers' values as JSON at this URL, e.g. http://0.0.0.0:8080/healthz.")
@click.option("--standalone", is_flag=True, help="Accepted (Kopf's flag): opd run never peers, always standalone.")
@click.option("--log-prefix/--no-log-prefix", default=None, hidden=True,
              help="Accepted (Kopf's flag): opd's lines always name their object.")
@click.option("--log-refkey", hidden=True,
              help="Accepted (Kopf's flag): opd's JSON lines name their object in 'object'.")
@click.option("-P", "--peering", hidden=True, help="Kopf's peering: refused.")
@click.option("-p", "--priority", hidden=True, type=int, help="Kopf's peering priority: refused.")
@click.option("--dev", is_flag=True, hidden=True, help="Kopf's peering priority 666: refused.")
@click.option("--ha", "ha_mode", type=click.Choice(["off", "leader", "shards"]), default="off", show_default=True,
              help="Run as one replica of several, coordinated through Leases: 'leader' (one runs the handlers, "
                   "the others stand by) or 'shards' (the objects are split between them).")
@click.option("--lease", help="With --ha: the Lease's name (shards: NAME-0 ... NAME-<S-1>).  [default: opd]")
@click.option("--lease-namespace", help="With --ha: the Leases' namespace.  [default: default]")
@click.option("--identity", help="With --ha: this replica's name in the Leases.  "
                                 "[default: $OPD_HA_IDENTITY, else <hostname>_<UUID>]")
@click.option("--shards", type=int, help="With --ha shards: how many shards (Leases).")
@click.option("--lease-duration", type=float, help="With --ha: seconds before an unrenewed Lease may be taken "
                                                   "over.  [default: 15]")
@click.option("--renew-deadline", type=float, help="With --ha: seconds without a renewal after which a holder "
                                                   "stops acting.  [default: 10]")
@click.option("--retry-period", type=float, help="With --ha: seconds between renewals and tries.  [default: 2]")
@click.option("--shard-filtering", type=click.Choice(["auto", "server", "labels", "client"]),
              help="With --ha shards: how each replica gets only its shards' events: 'server' (KEP-5866's "
                   "shardSelector, where the API server honours it; else client), 'labels' (a shard label on "
                   "each object, written by one replica), 'client' (every event comes, the others' dropped); "
                   "'auto' takes the first the cluster offers.  [default: auto]")
def run_cmd(files: tuple[Path, ...], modules: tuple[str, ...], namespaces: tuple[str, ...], clusterwide: bool,
            kubeconfig: Path | None, context: str | None, verbose: bool, debug: bool, quiet: bool, log_format: str,
            log_prefix: bool | None, log_refkey: str | None, liveness_url: str | None, standalone: bool,
            peering: str | None, priority: int | None,
            dev: bool, ha_mode: str, lease: str | None, lease_namespace: str | None, identity: str | None,
            shards: int | None, lease_duration: float | None, renew_deadline: float | None,
            retry_period: float | None, shard_filtering: str | None) -> None:
    """Development mode: load handlers from FILES and modules into one registry and run them.

    Takes kopf run's flags: -n/-A, -m, --verbose, --debug, --quiet, --liveness and --standalone
    (opd never peers); --peering, --priority and --dev are refused.
    """
    import asyncio

    from opd import devrun
    from opd.kube.credentials import Login
    from opd.logs import setup_logging
    from opd.orchestration import Memo, liveness_address, operator
    from opd.settings import OperatorSettings

    if namespaces and clusterwide:
        raise click.UsageError("give --namespace or --all-namespaces, not both")
    for flag, given in (("--peering", peering is not None), ("--priority", priority is not None), ("--dev", dev)):
        if given:
            raise click.UsageError(f"{flag}: {_NO_PEERING}")
    del standalone, log_prefix, log_refkey  # what opd run always is; what its log lines always say
    ha = _ha_settings(ha_mode, lease=lease, namespace=lease_namespace, identity=identity, shards=shards,
                      lease_duration=lease_duration, renew_deadline=renew_deadline, retry_period=retry_period,
                      filtering=shard_filtering)
    setup_logging("debug" if verbose or debug else "warning" if quiet else "info",
                  {"plain": "text", "full": "text"}.get(log_format, log_format))
    registry = devrun.load([str(f) for f in files], modules)
    if kubeconfig is None:
        _use_local_cluster_if_nothing_else()
    login = Login(kubeconfig=str(kubeconfig) if kubeconfig else None, context=context)

    if liveness_url is not None:
        liveness_address(liveness_url, "--liveness")  # a bad URL: one line, before anything starts

    async def run() -> None:
        settings, memo = OperatorSettings(), Memo()
        if ha is not None:
            await devrun.replicated(registry=registry, settings=settings, memo=memo,
                                    namespaces=list(namespaces) or None, clusterwide=clusterwide or not namespaces,
                                    login=login, ha=ha, liveness_endpoint=liveness_url)
            return
        await operator(registry=registry, settings=settings, memo=memo, namespaces=list(namespaces) or None,
                       clusterwide=clusterwide or not namespaces, login=login, liveness_endpoint=liveness_url)

    asyncio.run(run())
    _leave_without_waiting_for_handler_threads()
