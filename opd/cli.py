"""The ``opd`` command line (click).

Every user-caused error ends as one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from typing import Any

import click

from opd._version import __version__
from opd.errors import OpdError
from opd.testing import assets as cp_assets
from opd.testing import cluster


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
    """Build kube-apiserver from Debian's sources into opd's cache (once, ~5 minutes)."""
    found = cp_assets.install(force=force, progress=lambda line: click.echo(line, err=True))
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
