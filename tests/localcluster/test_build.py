"""``opd local-cluster install``: the build script run against stubs (apt-get, go, make) and a
fake root, so its apt source and work folder are seen to go on every way out; the progress
it prints while a (stub) build is silent; what it says it installs."""

from __future__ import annotations

import io
import itertools
import os
import re
import signal
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

from opd.errors import ControlPlaneError
from opd.localcluster import build
from opd.localcluster.assets import cache_dir

SCRIPT = build.build_script()
REPO = Path(__file__).resolve().parents[2]
SOURCE_NAME = "opd-bookworm.sources"

# apt-get records each call and whether opd's apt source is there; `source` leaves a tarball.
APT_GET = r"""#!/bin/bash
src="$STUB_ROOT/etc/apt/sources.list.d/opd-bookworm.sources"
if [ -f "$src" ]; then state=present; else state=absent; fi
echo "$* | source $state" >> "$STUB_LOG"
case "$1" in
  update) [ -f "$src" ] && cat "$src" >> "$STUB_LOG"; [ "${STUB_FAIL:-}" = update ] && exit 100 ;;
  source) cp "$STUB_TARBALL" ./kubernetes_1.20.5+really1.20.2.orig.tar.gz ;;
esac
exit 0
"""

# make checks Debian's reflect2 replaced the vendored one, then fails, hangs or "compiles".
MAKE = r"""#!/bin/bash
echo "make $* | $(cat vendor/github.com/modern-go/reflect2/reflect2.go)" >> "$STUB_LOG"
case "${STUB_MAKE:-ok}" in
  fail) echo "compile error: something"; exit 2 ;;
  hang) echo $$ > "$STUB_ROOT/make.pid"; exec sleep 60 ;;
esac
mkdir -p _output/bin
for b in kube-apiserver kube-controller-manager; do printf '#!/bin/sh\n' > _output/bin/$b; done
"""


def _write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.fixture
def stubbed(tmp_path: Path) -> dict[str, str]:
    """The environment for the build script: stub commands first on PATH, a fake root, a temp TMPDIR."""
    root = tmp_path / "root"
    (root / "etc" / "apt" / "sources.list.d").mkdir(parents=True)
    _write(root / "etc" / "debian_version", "12.11\n")
    _write(root / "usr/share/gocode/src/github.com/modern-go/reflect2/reflect2.go", "debian 1.0.2\n")
    _write(root / "usr/share/gocode/src/github.com/modern-go/reflect2/go.mod", "module reflect2\n")
    tarball = tmp_path / "kubernetes.orig.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        for name, text in {"vendor/github.com/modern-go/reflect2/reflect2.go": "vendored 1.0.1\n",
                           "Makefile": "all:\n"}.items():
            data = text.encode()
            info = tarfile.TarInfo(f"kubernetes-1.20.2/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    stubs = tmp_path / "bin"
    _write(stubs / "apt-get", APT_GET, 0o755)
    _write(stubs / "make", MAKE, 0o755)
    _write(stubs / "id", "#!/bin/sh\necho 0\n", 0o755)
    _write(stubs / "go", "#!/bin/sh\necho go version go1.19.8 linux/amd64\n", 0o755)
    _write(stubs / "etcd", "#!/bin/sh\n", 0o755)
    (tmp_path / "tmp").mkdir()
    return {
        "PATH": f"{stubs}:{os.environ['PATH']}",
        "OPD_BUILD_ROOT": str(root),
        "STUB_ROOT": str(root),
        "STUB_LOG": str(tmp_path / "calls.log"),
        "STUB_TARBALL": str(tarball),
        "TMPDIR": str(tmp_path / "tmp"),
        "HOME": str(tmp_path),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }


def _run_script(env: dict[str, str], dest: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPD_", "STUB_"))}
    return subprocess.run(["bash", str(SCRIPT), str(dest)], capture_output=True, text=True, timeout=60,
                          env={**clean, **env})


def _source(env: dict[str, str]) -> Path:
    return Path(env["OPD_BUILD_ROOT"]) / "etc" / "apt" / "sources.list.d" / SOURCE_NAME


def _calls(env: dict[str, str]) -> str:
    return Path(env["STUB_LOG"]).read_text()


def test_build_removes_its_apt_source_and_work_folder(stubbed: dict[str, str], tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    result = _run_script(stubbed, dest)
    assert result.returncode == 0, result.stderr
    calls = _calls(stubbed)
    assert "update -qq | source present" in calls  # the source is there while apt needs it
    assert "Types: deb-src" in calls and "Types: deb\n" not in calls  # Debian 12: sources only
    assert re.search(r"install .*golang-go etcd-server .* \| source present", calls)
    assert "make WHAT=cmd/kube-apiserver cmd/kube-controller-manager | debian 1.0.2" in calls
    assert not _source(stubbed).exists()  # ... and gone afterwards
    assert list((tmp_path / "tmp").iterdir()) == []  # the work folder too
    assert sorted(p.name for p in dest.iterdir()) == ["VERSION", "etcd", "kube-apiserver", "kube-controller-manager"]
    assert "==> done: " in result.stdout


def test_build_on_debian_13_adds_bookworm_binaries_for_go_1_19(stubbed: dict[str, str], tmp_path: Path) -> None:
    _write(Path(stubbed["OPD_BUILD_ROOT"]) / "etc" / "debian_version", "13.1\n")
    result = _run_script(stubbed, tmp_path / "dest")
    assert result.returncode == 0, result.stderr
    calls = _calls(stubbed)
    assert "Types: deb-src" in calls and "Types: deb\n" in calls
    assert re.search(r"install .*golang-1\.19-go ", calls)
    assert not _source(stubbed).exists()


def test_failed_compile_removes_the_apt_source_and_keeps_only_the_log(
    stubbed: dict[str, str], tmp_path: Path
) -> None:
    result = _run_script({**stubbed, "STUB_MAKE": "fail"}, tmp_path / "dest")
    assert result.returncode == 1
    found = re.search(r"error: the kube-apiserver build failed; full log in (\S+)", result.stderr)
    assert found, result.stderr
    log = Path(found.group(1))
    assert "compile error: something" in log.read_text()
    assert [p.name for p in log.parent.iterdir()] == ["make.log"]
    assert not _source(stubbed).exists()
    assert not (tmp_path / "dest").exists()


def test_failed_apt_get_names_the_step_and_removes_the_apt_source(stubbed: dict[str, str], tmp_path: Path) -> None:
    result = _run_script({**stubbed, "STUB_FAIL": "update"}, tmp_path / "dest")
    assert result.returncode == 100
    assert "error: apt-get update failed (exit 100)" in result.stderr
    assert "update -qq | source present" in _calls(stubbed)
    assert not _source(stubbed).exists()
    assert [p.name for p in (tmp_path / "tmp").iterdir()] == []  # nothing downloaded yet: an empty folder goes


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_stopped_install_stops_the_build_and_removes_the_apt_source(
    stubbed: dict[str, str], sig: signal.Signals
) -> None:
    """A signal reaches only opd (the build runs in a session of its own): opd stops the whole build."""
    code = "from opd.localcluster import build; build.install(force=True)"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPD_", "STUB_"))}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**clean, **stubbed, "STUB_MAKE": "hang"})
    pid_file = Path(stubbed["STUB_ROOT"]) / "make.pid"
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text().strip():
            assert time.monotonic() < deadline and proc.poll() is None, "the build never reached make"
            time.sleep(0.1)
        make_pid = int(pid_file.read_text())
        assert _source(stubbed).exists()
        proc.send_signal(sig)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # An uncaught KeyboardInterrupt ends Python by SIGINT; SIGTERM became SystemExit(143).
    assert proc.returncode == (-signal.SIGINT if sig == signal.SIGINT else 128 + signal.SIGTERM), output
    assert not _pid_alive(make_pid)
    assert not _source(stubbed).exists()


def _stub_script(tmp_path: Path, body: str) -> Path:
    return _write(tmp_path / "stub-build.sh", "set -e\n" + textwrap.dedent(body))


def test_install_says_the_step_and_time_at_least_every_10s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build silent for 12 s, with the default interval: the step is said again meanwhile."""
    monkeypatch.delenv("OPD_CONTROL_PLANE_ASSETS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    script = _stub_script(tmp_path, """
        echo "==> compiling the stub"
        sleep 12
        mkdir -p "$1"
        for b in etcd kube-apiserver; do printf '#!/bin/sh\\n' > "$1/$b"; chmod +x "$1/$b"; done
        echo "==> done"
    """)
    lines: list[tuple[float, str]] = []
    assets = build.install(script=script, progress=lambda line: lines.append((time.monotonic(), line)))
    assert assets.kube_apiserver == cache_dir() / "kube-apiserver"
    said = [text for _, text in lines]
    assert "puts on this system" in said[0]
    assert any("etcd-server" in text for text in said[1:5])  # before the build's first step
    steps = [(t, text) for t, text in lines if text.startswith("==> [")]
    assert re.fullmatch(r"==> \[0m0\ds\] compiling the stub", steps[0][1])
    ticks = [text for _, text in steps if text.endswith("compiling the stub (still running)")]
    assert ticks and all(re.match(r"==> \[0m\d\ds\] ", text) for text in ticks)
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(steps)]
    assert max(gaps) <= 10.0, gaps
    assert steps[-1][1].endswith("] done")


def test_failed_install_is_one_error_and_stops_its_ticker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPD_CONTROL_PLANE_ASSETS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    script = _stub_script(tmp_path, """
        echo "==> fetching"
        sleep 1
        echo "error: no network" >&2
        exit 3
    """)
    lines: list[str] = []
    with pytest.raises(ControlPlaneError, match=r"^building the control plane failed: no network$"):
        build.install(script=script, progress=lines.append, interval=0.3)
    assert any(line.endswith("fetching (still running)") for line in lines)
    count = len(lines)
    time.sleep(1.0)
    assert len(lines) == count
    assert not any(t.name == "opd-build-progress" for t in threading.enumerate())

    quiet = _stub_script(tmp_path, """
        echo "==> unpacking"
        exit 4
    """)
    with pytest.raises(ControlPlaneError, match=r"^building the control plane failed: unpacking \(exit 4\)$"):
        build.install(script=quiet, progress=lines.append)


def test_install_with_the_binaries_in_place_runs_no_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPD_CONTROL_PLANE_ASSETS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for name in ("etcd", "kube-apiserver"):
        _write(cache_dir() / name, "#!/bin/sh\n", 0o755)
    lines: list[str] = []
    build.install(script=tmp_path / "no-such-script.sh", progress=lines.append)
    assert lines == [f"==> already built: {cache_dir()}"]


def test_what_the_install_says_it_installs_is_what_it_installs() -> None:
    """Every package the script installs is named by the install before it starts, and by the README."""
    line = next(line for line in SCRIPT.read_text().splitlines() if line.startswith("step \"installing "))
    packages = line.removeprefix('step "installing ').rstrip('"').split()
    said = " ".join(build.what_it_installs(Path("/dest")))
    readme = (REPO / "README.md").read_text()
    section = readme.split("## The local control plane", 1)[1].split("\n## ", 1)[0]
    for package in [p for p in packages if p != "$go_pkg"] + ["golang-go", "golang-1.19-go"]:
        assert package in said, package
        assert package in section, package
    assert "~/.cache/opd/control-plane/1.20.2" in section
