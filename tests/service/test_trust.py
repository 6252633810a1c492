"""opd start and its plugins' trust and options, in-process on the real apiserver: what is refused
is said once, in one line, and the other plugins run."""

from __future__ import annotations

import asyncio
from importlib import metadata
from pathlib import Path

import pytest
from helpers import daemon_plugins
from helpers.operators import create_kex, eventually
from kubernetes_asyncio import client
from loguru import logger

from opd.service import config as daemon_config
from opd.service.plugins import Status
from opd.service.supervisor import Supervisor


def _eps(*names: str) -> list[metadata.EntryPoint]:
    return [metadata.EntryPoint(name, f"helpers.daemon_plugins:{name.replace('-', '_')}", "opd.plugins")
            for name in names]


def _config(tmp_path: Path, kubeconfig: Path, namespace: str, extra: str) -> daemon_config.DaemonConfig:
    path = tmp_path / "opd.toml"
    path.write_text(f"""
[opd]
namespaces = ["{namespace}"]
shutdown_timeout = 3

[kubernetes]
kubeconfig = "{kubeconfig}"
{extra}
""")
    return daemon_config.load(path)


async def _run_until_handled(supervisor: Supervisor, api: client.ApiClient, namespace: str,
                             handlers: set[str]) -> list[str]:
    """Runs the supervisor until the plugins named in ``handlers`` handled one object; returns what opd logged."""
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="WARNING")
    stop = asyncio.Event()
    task = asyncio.create_task(supervisor.run(stop))
    try:
        await asyncio.wait_for(supervisor.started.wait(), 30)
        await create_kex(api, namespace, "trusted")
        await eventually(lambda: {who for who, _ in daemon_plugins.CALLS} == handlers, timeout=30)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        logger.remove(sink)
    return lines


@pytest.fixture(autouse=True)
def _clean_calls() -> None:
    daemon_plugins.CALLS.clear()


async def test_a_bad_table_and_a_shared_login_fail_their_plugins_only(
    tmp_path: Path, kubeconfig: Path, namespace: str, crd: str, api: client.ApiClient
) -> None:
    config = _config(tmp_path, kubeconfig, namespace, """
[plugins.checked]
intervall = 5

[plugins.recorder_a]
label = "a"
""")
    supervisor = Supervisor(config, env={}, entry_points=_eps("checked", "recorder_a", "shared-login"))
    lines = await _run_until_handled(supervisor, api, namespace, {"a"})
    assert supervisor.discovery is not None
    found = {p.name: p for p in supervisor.discovery.plugins}
    assert (found["checked"].status, found["checked"].error) == (
        Status.FAILED, "[plugins.checked].intervall: unknown key (did you mean 'interval'?)")
    assert found["shared-login"].status is Status.FAILED
    assert list(supervisor.runners) == ["recorder_a"]
    # Said once each, in one line; and, there being no allow-list, that every installed plugin runs.
    assert lines.count("opd: plugin 'checked' failed: [plugins.checked].intervall: unknown key "
                       "(did you mean 'interval'?)") == 1
    assert lines.count("opd: plugin 'shared-login' failed: on.login handlers (custom_login) need "
                       "isolation = \"thread\" in [plugins.shared-login] (a shared plugin uses the daemon's "
                       "connection)") == 1
    assert lines.count("opd: [plugins].enable is not set: every installed plugin runs (checked, recorder_a, "
                       "shared-login), in opd's process and with its credentials; pin the list with "
                       '[plugins] enable = ["checked", "recorder_a", "shared-login"]') == 1
    assert all("\n" not in line for line in lines)


async def test_the_allow_list_names_what_it_leaves_out_and_a_thread_may_log_in(
    tmp_path: Path, kubeconfig: Path, namespace: str, crd: str, api: client.ApiClient
) -> None:
    config = _config(tmp_path, kubeconfig, namespace, """
[plugins]
enable = ["checked", "shared-login"]

[plugins.checked]
interval = 5

[plugins.shared-login]
isolation = "thread"
""")
    supervisor = Supervisor(config, env={}, entry_points=_eps("checked", "recorder_a", "recorder_b", "shared-login"))
    lines = await _run_until_handled(supervisor, api, namespace, {"checked", "login"})
    assert sorted(supervisor.runners) == ["checked", "shared-login"]
    assert lines == ["opd: installed but not in [plugins].enable, so not run: recorder_a, recorder_b"]
