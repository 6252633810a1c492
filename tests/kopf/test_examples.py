"""The harness of tests/kopf/examples (Kopf's examples themselves run in ``tox -e kopf-examples``):
where the examples come from (digest checked, only examples/ and the licence unpacked), the table and
the count, and one whole judgement of an example of ours under opd against the local apiserver.
"""

from __future__ import annotations

import importlib.util
import io
import sys
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
sys.path[:0] = [str(EXAMPLES_DIR), str(EXAMPLES_DIR.parent / "wild")]

import examples_source as source  # noqa: E402
from examples_judged import EXAMPLES, Example, minimal  # noqa: E402
from wild_harness import Result  # noqa: E402
from wild_kube import Kube  # noqa: E402

from opd.localcluster import LocalControlPlane  # noqa: E402

# run.py is a script: loaded under a name of its own (wild/ has a run.py too).
_spec = importlib.util.spec_from_file_location("examples_run", EXAMPLES_DIR / "run.py")
assert _spec and _spec.loader
run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run)


def test_the_eighteen_examples_of_kopf_are_all_there() -> None:
    names = [e.name for e in EXAMPLES]
    assert len(names) == len(set(names)) == 18
    assert [n[:2] for n in names] == [f"{i:02d}" for i in range(1, 18)] + ["99"]


def _sdist(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_a_sdist_with_another_digest_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / source.SDIST).write_bytes(_sdist({"kopf-1.45.2/examples/x.py": b"tampered"}))
    with pytest.raises(source.SourceError) as refused:
        source.fetch(tmp_path)
    assert "SHA-256" in str(refused.value) and source.SHA256 in str(refused.value)
    assert "\n" not in str(refused.value)


def test_only_the_examples_and_the_licence_are_unpacked_byte_for_byte(tmp_path: Path) -> None:
    example = b"import kopf\n\n@kopf.on.create('kopfexamples')\ndef f(**_): pass\n"
    sdist = tmp_path / "kopf.tar.gz"
    sdist.write_bytes(_sdist({"kopf-1.45.2/examples/01-minimal/example.py": example,
                              "kopf-1.45.2/examples/crd.yaml": b"kind: CRD\n",
                              "kopf-1.45.2/LICENSE": b"MIT License\n",
                              "kopf-1.45.2/kopf/__init__.py": b"# Kopf itself: not wanted\n",
                              "kopf-1.45.2/setup.py": b""}))
    examples = source.unpack(sdist, tmp_path / "out")
    assert examples == tmp_path / "out" / "examples"
    assert (examples / "01-minimal" / "example.py").read_bytes() == example
    assert (tmp_path / "out" / "LICENSE").read_bytes() == b"MIT License\n"
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file()) == [
        "LICENSE", "examples/01-minimal/example.py", "examples/crd.yaml"]


def test_the_table_and_the_count_leave_out_what_was_not_judged() -> None:
    results = [Result("01-minimal", "kopf", True), Result("01-minimal", "opd", True),
               Result("17-admission", "kopf", False, "why one"), Result("17-admission", "opd", True),
               Result("02-children", "kopf", None, "not installed here: pykube"),
               Result("02-children", "opd", None, "not installed here: pykube")]
    table = run.render(results, ["kopf", "opd"]).splitlines()
    assert table[0].split()[:3] == ["example", "kopf", "opd"]
    assert table[2].split()[:3] == ["17-admission", "FAILS", "runs"] and table[2].endswith("kopf: why one")
    assert "not judged" in table[3]
    assert run.count_line("Kopf's examples", results, ["kopf", "opd"], unjudged=True) == (
        "Kopf's examples: Kopf runs 1 of 2 (1 not judged), opd runs 2 of 2 (1 not judged)")


def test_unknown_example_names_are_refused_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run.parse_args(["--examples", "01-minimal,nope"])
    assert "unknown example: nope" in capsys.readouterr().err


# An example of ours, written as Kopf's 01-minimal is (``import kopf``), judged by 01's scenario.
OURS = """
import kopf

@kopf.on.create('kopfexamples')
def create_fn(spec, **_):
    return {'message': 'hello world'}
"""


@pytest.mark.apiserver
def test_judge_passes_a_working_example_and_fails_a_broken_one_with_its_error(
        control_plane: LocalControlPlane, crd: str, tmp_path: Path) -> None:
    kube = Kube(control_plane.server, control_plane.token, control_plane.ca_file)
    for name, text in (("01-minimal", OURS), ("01-broken", "import kopf\nkopf.no_such_name_here\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "example.py").write_text(text)

    result = run.judge(Example("01-minimal", minimal), tmp_path, "opd", kube, control_plane.kubeconfig, tmp_path, 60)
    assert result.ok is True, result.why

    result = run.judge(Example("01-broken", minimal), tmp_path, "opd", kube, control_plane.kubeconfig, tmp_path, 60)
    assert result.ok is False
    assert "the example exited with 1" in result.why and "no_such_name_here" in result.why

    absent = Example("01-absent", minimal, needs=("no_such_module_here",))
    result = run.judge(absent, tmp_path, "opd", kube, control_plane.kubeconfig, tmp_path, 60)
    assert result.ok is None and "no_such_module_here" in result.why


# -- the names 17-admission builds: they construct silently; a tunnel says what it cannot do when started ------------
async def test_the_auto_tunnel_serves_locally_where_kopf_would_tunnel_and_says_so() -> None:
    from loguru import logger

    import opd

    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m).strip()), level="WARNING", format="{message}")

    def cluster(version: str) -> Any:
        async def get(path: str, query: Mapping[str, str]) -> Any:
            return {"gitVersion": version} if path == "/version" else {"items": []}
        return get

    try:
        assert await opd.WebhookAutoTunnel(port=1234).detect(cluster("v1.20.2")) == "local"
        assert [line for line in lines if "WebhookAutoTunnel" in line] == [
            "opd: WebhookAutoTunnel: Kopf would open an ngrok tunnel to this cluster; opd has none and serves "
            "locally (reached by an API server on this host only; elsewhere, use opd.WebhookServer(host=...))"]
        lines.clear()
        k3s = opd.WebhookAutoTunnel()
        assert await k3s.detect(cluster("v1.27.4+k3s1")) == "k3d"  # Kopf's pick too: the server K3s reaches
        assert k3s.base_url.startswith("https://host.k3d.internal") and not lines
    finally:
        logger.remove(sink)


def test_an_ngrok_tunnel_is_built_silently_and_refuses_in_one_line_when_started() -> None:
    import opd
    from opd.errors import ConfigError

    tunnel = opd.WebhookNgrokTunnel(binary="/usr/local/bin/ngrok", region="eu")  # as 17-admission builds it
    with pytest.raises(ConfigError) as refused:
        tunnel(lambda *a, **k: None)  # type: ignore[arg-type]
    assert "WebhookNgrokTunnel cannot start" in str(refused.value) and "\n" not in str(refused.value)
