"""sd_notify against a real AF_UNIX datagram socket standing in for systemd; the unit file."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from opd.service import systemd
from opd.service.supervisor import MONITOR_INTERVAL, READY_TIMEOUT

REPO = Path(__file__).resolve().parents[2]


class FakeSystemd:
    """The receiving end of $NOTIFY_SOCKET."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def receive(self, timeout: float = 2.0) -> str:
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode()

    def pending(self) -> list[str]:
        self.sock.setblocking(False)
        messages = []
        try:
            while True:
                messages.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            return messages


def _bind(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    return sock


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSystemd]:
    path = tmp_path / "notify"
    with _bind(str(path)) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield FakeSystemd(sock)


def test_ready_then_stopping(notify_socket: FakeSystemd) -> None:
    assert systemd.ready("serving 2 plugins")
    assert notify_socket.receive() == "READY=1\nSTATUS=serving 2 plugins"
    assert systemd.stopping()
    assert notify_socket.receive() == "STOPPING=1"


def test_status_reloading_and_watchdog(notify_socket: FakeSystemd) -> None:
    assert systemd.status("plugin good:\nfailed")  # a newline would start a new field
    assert notify_socket.receive() == "STATUS=plugin good: failed"
    assert systemd.reloading()
    assert re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=\d+", notify_socket.receive())
    assert systemd.watchdog()
    assert notify_socket.receive() == "WATCHDOG=1"


def test_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"opd-test-{uuid.uuid4().hex}"
    with _bind("\0" + name) as sock:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.ready()
        assert FakeSystemd(sock).receive() == "READY=1"


def test_without_systemd_everything_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert not systemd.ready("x")
    assert not systemd.stopping()
    assert not systemd.status("x")
    assert not systemd.watchdog()
    assert systemd.watchdog_interval() is None


def test_a_socket_nobody_listens_on_is_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert systemd.ready() is False


def test_watchdog_interval_is_half_the_period() -> None:
    pid = str(os.getpid())
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": pid}) == 15.0
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None  # another's
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert systemd.watchdog_interval({}) is None


async def run_loop_for(calls: int, check: Callable[[int], bool | Awaitable[bool]],
                       interval: float | None = 0.01) -> list[float]:
    """Run watchdog_loop until ``check`` was called ``calls`` times; the times of the calls."""
    times: list[float] = []
    enough = asyncio.Event()

    async def counted() -> bool:
        times.append(time.monotonic())
        if len(times) == calls:
            enough.set()
        verdict = check(len(times))
        return await verdict if inspect.isawaitable(verdict) else verdict

    task = asyncio.create_task(systemd.watchdog_loop(counted, interval=interval))
    await asyncio.wait_for(enough.wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return times


async def test_watchdog_loop_pings_only_while_healthy(notify_socket: FakeSystemd) -> None:
    await run_loop_for(5, lambda n: n in (1, 2, 5))
    assert notify_socket.pending() == ["WATCHDOG=1"] * 3


async def test_watchdog_loop_with_an_async_or_raising_check(notify_socket: FakeSystemd) -> None:
    async def healthy(n: int) -> bool:
        if n == 2:
            raise RuntimeError("probe failed")
        return n != 3

    await run_loop_for(4, healthy)
    assert notify_socket.pending() == ["WATCHDOG=1"] * 2  # calls 1 and 4


async def test_watchdog_loop_returns_without_a_watchdog(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    await asyncio.wait_for(systemd.watchdog_loop(lambda: True), timeout=1)


async def test_watchdog_loop_takes_its_interval_from_systemd(notify_socket: FakeSystemd,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # 100 ms: a ping every 50 ms
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    times = await run_loop_for(3, lambda n: True, interval=None)
    assert all(later - earlier >= 0.045 for earlier, later in itertools.pairwise(times))
    assert notify_socket.pending() == ["WATCHDOG=1"] * 3


# -- etc/opd.service -------------------------------------------------------------------------------------------------


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in (REPO / "etc" / "opd.service").read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_the_unit_file_says_what_the_daemon_does() -> None:
    unit = unit_settings()
    expected = {
        "Type": ["notify"], "NotifyAccess": ["main"], "WatchdogSec": ["30"], "Restart": ["on-failure"],
        "ExecStart": ["/usr/local/bin/opd start --config /etc/opd/opd.toml"],
        "ExecReload": ["/bin/kill -HUP $MAINPID"],
        "User": ["opd"], "ProtectSystem": ["strict"], "ProtectHome": ["yes"], "PrivateTmp": ["yes"],
        "NoNewPrivileges": ["yes"], "RestrictAddressFamilies": ["AF_UNIX AF_INET AF_INET6"],
        "CapabilityBoundingSet": [""], "ProtectKernelTunables": ["yes"], "ProtectKernelModules": ["yes"],
        "ProtectKernelLogs": ["yes"], "PrivateMounts": ["yes"], "ProtectProc": ["invisible"], "ProcSubset": ["pid"],
        # The cloud metadata service over IPv4 and IPv6: the node's credentials.
        "IPAddressDeny": ["169.254.169.254 fd00:ec2::254"],
    }
    for key, values in expected.items():
        assert unit.get(key) == values, key
    assert unit["SystemCallFilter"][0] == "@system-service"
    assert int(unit["RestartSec"][0]) > 0
    # Stopping must outlast opd's own graceful shutdown bound.
    assert int(unit["TimeoutStopSec"][0]) > 8
    # Starting must outlast the bound after which a plugin that has not listed counts as failed:
    # READY=1 comes by then, whatever the plugins do.
    assert int(unit["TimeoutStartSec"][0]) > READY_TIMEOUT
    assert int(unit["WatchdogSec"][0]) > 2 * MONITOR_INTERVAL


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_unit_file_verifies_and_is_hardened(tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at a binary this machine has.
    text = (REPO / "etc" / "opd.service").read_text().replace("/usr/local/bin/opd", "/bin/true")
    unit = tmp_path / "opd.service"
    unit.write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
                              capture_output=True, text=True, timeout=60)
    if security.returncode != 0 and "offline" in security.stderr:
        pytest.skip("this systemd-analyze has no offline security analysis")
    found = re.search(r"Overall exposure level for opd\.service: ([\d.]+)", security.stdout)
    assert found, security.stdout + security.stderr
    assert float(found.group(1)) <= 2.0  # systemd rates 0-10; under 2 is "OK"
