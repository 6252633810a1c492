"""opd's own kubeconfig reader, exec plugins and token files (no API server: pure logic and child
processes). The same credentials against the real API server: tests/kube/test_credentials.py."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import os
import stat
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opd.errors import ConfigError
from opd.kube import credentials, kubeconfig
from opd.kube.auth import Credentials, ExecRefresh, TokenFile
from opd.kube.credentials import kubeconfig_credentials
from opd.kube.execplugin import ExecCredential, ExecPlugin, parse_exec_credential
from opd.kube.kubeconfig import KubeconfigError

SECRET = "s3cr3t-t0ken"
PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
V1 = "client.authentication.k8s.io/v1"
WHERE = "kubeconfig K: users[name=u].user.exec"


def _write(path: Path, doc: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc))
    return path


def _config(user: dict[str, Any] | None = None, cluster: dict[str, Any] | None = None,
            context: str = "c") -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": context,
        "clusters": [{"name": "k", "cluster": {"server": "https://10.0.0.1:6443/", **(cluster or {})}}],
        "users": [{"name": "u", "user": user or {}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}},
                     {"name": "other", "context": {"cluster": "k"}}],
    }


def _load(path: Path | str, context: str | None = None) -> Credentials:
    return asyncio.run(kubeconfig_credentials(str(path), context))


# -- shapes ------------------------------------------------------------------------------------------------------------

def test_certificates_and_keys_as_files_relative_to_their_kubeconfig(tmp_path: Path) -> None:
    (tmp_path / "kube" / "pki").mkdir(parents=True)
    for name in ("ca.crt", "client.crt", "client.key"):
        (tmp_path / "kube" / "pki" / name).write_bytes(PEM)
    path = _write(tmp_path / "kube" / "config", _config(
        user={"client-certificate": "pki/client.crt", "client-key": "pki/client.key"},
        cluster={"certificate-authority": "pki/ca.crt", "tls-server-name": "kubernetes", "proxy-url": "http://p:3128"}))
    creds = _load(path)
    assert creds.host == "https://10.0.0.1:6443"
    assert creds.ssl_ca_cert == str(tmp_path / "kube" / "pki" / "ca.crt")
    assert (creds.cert_file, creds.key_file) == (str(tmp_path / "kube/pki/client.crt"),
                                                 str(tmp_path / "kube/pki/client.key"))
    assert (creds.tls_server_name, creds.proxy, creds.verify_ssl) == ("kubernetes", "http://p:3128", True)
    assert creds.api_key == {}  # a certificate, no header


def test_certificates_and_keys_as_data_go_to_private_files(tmp_path: Path) -> None:
    data = base64.b64encode(PEM).decode()
    path = _write(tmp_path / "config", _config(
        user={"client-certificate-data": data, "client-key-data": data},
        cluster={"certificate-authority-data": data, "insecure-skip-tls-verify": True}))
    creds = _load(path)
    for file in (creds.ssl_ca_cert, creds.cert_file, creds.key_file):
        assert file is not None and Path(file).read_bytes() == PEM
        assert stat.S_IMODE(Path(file).stat().st_mode) & 0o077 == 0
    assert creds.verify_ssl is False
    der = b"\x30\x82\x01\x0a\x02\x82"  # not PEM: written as decoded, not decoded twice
    encoded = base64.b64encode(der).decode()
    creds = _load(_write(tmp_path / "der", _config(cluster={"certificate-authority-data": encoded})))
    assert creds.ssl_ca_cert is not None and Path(creds.ssl_ca_cert).read_bytes() == der


def test_token_basic_auth_and_no_user(tmp_path: Path) -> None:
    assert _load(_write(tmp_path / "a", _config(user={"token": SECRET}))).api_key == {
        "BearerToken": f"Bearer {SECRET}"}
    assert _load(_write(tmp_path / "b", _config(user={"username": "u", "password": "p"}))).api_key == {
        "BearerToken": "Basic dTpw"}
    assert _load(_write(tmp_path / "c", _config(user={"token": SECRET})), "other").api_key == {}
    assert SECRET not in repr(_load(tmp_path / "a"))


def test_a_token_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("first\n")
    creds = _load(_write(tmp_path / "config", _config(user={"tokenFile": "token"})))

    async def header() -> str | None:
        return await creds.authorization()

    assert asyncio.run(header()) == "Bearer first"
    (tmp_path / "token.new").write_text("second")
    os.replace(tmp_path / "token.new", tmp_path / "token")  # as the kubelet swaps it
    assert asyncio.run(header()) == "Bearer second"
    (tmp_path / "token").write_text("")  # caught mid-write: the last one still serves
    assert asyncio.run(header()) == "Bearer second"


def test_several_files_merge_as_kubectl_merges_them(tmp_path: Path) -> None:
    first = _write(tmp_path / "one" / "config", {
        "current-context": "c",
        "users": [{"name": "u", "user": {"token": "from-first"}}]})
    (tmp_path / "two" / "ca.crt").parent.mkdir()
    (tmp_path / "two" / "ca.crt").write_bytes(PEM)
    second = _write(tmp_path / "two" / "config", {
        **_config(user={"token": "from-second"}, cluster={"certificate-authority": "ca.crt"}),
        "current-context": "other"})
    creds = _load(f"{first}{os.pathsep}{tmp_path / 'absent'}{os.pathsep}{second}")
    assert creds.api_key == {"BearerToken": "Bearer from-first"}  # the first file to name a user wins it
    assert creds.ssl_ca_cert == str(tmp_path / "two" / "ca.crt")  # relative to the file that says it
    merged = kubeconfig.read(f"{first}{os.pathsep}{second}")
    assert merged.current_context == "c"  # the first non-empty current-context


MALFORMED: list[tuple[Any, str]] = [
    ("clusters: [this is: not: yaml", "malformed YAML at line 1"),
    ("- just\n- a list\n", "expected a mapping at the top, got a list"),
    ({"clusters": {"k": 1}}, "clusters: expected a list, got a mapping"),
    ({"clusters": [{"cluster": {}}]}, "clusters[0].name: expected a name, got nothing"),
    ({"clusters": ["k"]}, "clusters[0]: expected a mapping, got a string"),
    ({"users": [{"name": "u", "user": [SECRET]}]}, "users[name=u].user: expected a mapping, got a list"),
    ({"current-context": ["c"]}, "current-context: expected a string, got a list"),
    ({"contexts": []}, "no current-context (and no context chosen)"),
    ({"current-context": "c"}, "no context named 'c'"),
    ({**_config(), "clusters": []}, "contexts[name=c].context.cluster: no cluster named 'k'"),
    ({**_config(), "users": []}, "contexts[name=c].context.user: no user named 'u'"),
    (_config(cluster={"server": None}), "clusters[name=k].cluster.server: missing"),
    (_config(cluster={"server": "10.0.0.1"}), "clusters[name=k].cluster.server: expected https://HOST[:PORT]"),
    (_config(cluster={"certificate-authority-data": "not base64!"}),
     "clusters[name=k].cluster.certificate-authority-data: not base64"),
    (_config(cluster={"certificate-authority": "missing.crt"}), "clusters[name=k].cluster.certificate-authority: "),
    (_config(cluster={"insecure-skip-tls-verify": "yes"}),
     "clusters[name=k].cluster.insecure-skip-tls-verify: expected true or false, got a string"),
    (_config(user={"token": [SECRET]}), "users[name=u].user.token: expected a string, got a list"),
    (_config(user={"tokenFile": "absent"}), "users[name=u].user.tokenFile: token file "),
    (_config(user={"exec": "aws"}), "users[name=u].user.exec: expected a mapping, got a string"),
    (_config(user={"exec": {"apiVersion": V1}}), "users[name=u].user.exec.command: missing"),
    (_config(user={"exec": {"command": "x", "apiVersion": "v9"}}), "users[name=u].user.exec.apiVersion: expected"),
    (_config(user={"exec": {"command": "x", "apiVersion": V1, "args": "--a"}}),
     "users[name=u].user.exec.args: expected a list of strings"),
    (_config(user={"exec": {"command": "x", "apiVersion": V1, "env": [{"value": SECRET}]}}),
     "users[name=u].user.exec.env[0]: expected {name: string, value: string}"),
]


@pytest.mark.parametrize(("doc", "said"), MALFORMED)
def test_a_malformed_kubeconfig_is_one_line_naming_the_file_and_key(tmp_path: Path, doc: Any, said: str) -> None:
    path = tmp_path / "config"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    with pytest.raises(KubeconfigError) as caught:
        _load(path)
    message = str(caught.value)
    assert message.startswith(f"kubeconfig {path}: ") and said in message, message
    assert "\n" not in message and SECRET not in message


def test_a_huge_kubeconfig_is_refused_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kubeconfig, "MAX_FILE_BYTES", 1000)
    path = tmp_path / "config"
    path.write_text("# " + "x" * 2000)
    with pytest.raises(KubeconfigError, match=r"larger than"):
        _load(path)


def test_a_missing_kubeconfig_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"^kubeconfig {tmp_path / 'nope'}: no such file"):
        asyncio.run(credentials.load_configuration(credentials.Login(kubeconfig=str(tmp_path / "nope"))))


# -- exec plugins ------------------------------------------------------------------------------------------------------

def _plugin(tmp_path: Path, body: str, name: str = "plugin.py") -> Path:
    """A plugin script; ``body`` is Python run with ``info`` (KUBERNETES_EXEC_INFO, parsed) and ``argv``."""
    script = tmp_path / name
    tmp_path.mkdir(parents=True, exist_ok=True)
    head = f"#!{sys.executable}\nimport json, os, sys\ninfo = json.loads(os.environ['KUBERNETES_EXEC_INFO'])\n"
    script.write_text(head + textwrap.dedent(body))
    script.chmod(0o700)
    return script


def _answer(token: str = SECRET, expires: str | None = None, version: str = V1) -> str:
    status: dict[str, Any] = {"token": token}
    if expires:
        status["expirationTimestamp"] = expires
    return json.dumps({"apiVersion": version, "kind": "ExecCredential", "status": status})


def test_an_exec_plugin_gets_its_args_env_and_cluster_info(tmp_path: Path) -> None:
    _plugin(tmp_path / "bin", f'''
        assert sys.argv[1:] == ["--region", "eu"], sys.argv
        assert os.environ["OPD_TEST"] == "yes"
        assert info["kind"] == "ExecCredential" and info["spec"]["interactive"] is False
        assert info["spec"]["cluster"]["server"] == "https://10.0.0.1:6443/", info
        assert info["spec"]["cluster"]["config"] == {{"role": "x"}}, info
        print({_answer(expires="2099-01-01T00:00:00Z")!r})
    ''')
    path = _write(tmp_path / "config", _config(
        user={"exec": {"command": "./bin/plugin.py", "apiVersion": V1, "args": ["--region", "eu"],
                       "env": [{"name": "OPD_TEST", "value": "yes"}], "provideClusterInfo": True,
                       "interactiveMode": "Never"}},
        cluster={"extensions": [{"name": "client.authentication.k8s.io/exec", "extension": {"role": "x"}}]}))
    creds = _load(path)
    assert creds.api_key == {"BearerToken": f"Bearer {SECRET}"}
    assert isinstance(creds.refresher, ExecRefresh)
    assert creds.refresher.expires == datetime.datetime(2099, 1, 1, tzinfo=datetime.UTC)


def test_an_exec_plugins_token_is_renewed_before_it_expires_and_after_a_401(tmp_path: Path) -> None:
    soon = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=5)).isoformat()
    later = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)).isoformat()
    counter = tmp_path / "runs"
    _plugin(tmp_path, f'''
        runs = int(open({str(counter)!r}).read()) + 1 if os.path.exists({str(counter)!r}) else 1
        open({str(counter)!r}, "w").write(str(runs))
        expires = {soon!r} if runs == 1 else {later!r}
        print(json.dumps({{"apiVersion": "{V1}", "kind": "ExecCredential",
                          "status": {{"token": f"t{{runs}}", "expirationTimestamp": expires}}}}))
    ''')
    creds = _load(_write(tmp_path / "config", _config(user={"exec": {"command": str(tmp_path / "plugin.py"),
                                                                        "apiVersion": V1}})))

    async def scenario() -> list[str | None]:
        headers = [await creds.authorization()]  # expires within EXEC_EARLY: renewed now
        headers.append(await creds.authorization())  # valid for an hour: not run again
        creds.refused()  # a 401
        headers.append(await creds.authorization())
        return headers

    assert asyncio.run(scenario()) == ["Bearer t2", "Bearer t2", "Bearer t3"]
    assert counter.read_text() == "3"


def test_a_failing_plugin_is_one_line_with_its_last_words(tmp_path: Path) -> None:
    _plugin(tmp_path, '''
        print("some detail", file=sys.stderr)
        print("error: no SSO session; run aws sso login", file=sys.stderr)
        sys.exit(3)
    ''')
    path = _write(tmp_path / "config", _config(user={"exec": {"command": str(tmp_path / "plugin.py"),
                                                               "apiVersion": V1}}))
    with pytest.raises(KubeconfigError) as caught:
        _load(path)
    assert str(caught.value) == (f"kubeconfig {path}: users[name=u].user.exec: {str(tmp_path / 'plugin.py')!r} "
                                 "exited with 3: error: no SSO session; run aws sso login")


def test_a_missing_plugin_is_one_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "config", _config(user={"exec": {"command": "opd-no-such-plugin", "apiVersion": V1}}))
    with pytest.raises(KubeconfigError, match=r"users\[name=u\]\.user\.exec: cannot run 'opd-no-such-plugin': "):
        _load(path)


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "State:\tZ" in status.read_text()


def test_a_plugin_that_hangs_is_stopped_at_its_time_bound(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    _plugin(tmp_path, f'''
        open({str(pidfile)!r}, "w").write(str(os.getpid()))
        import time; time.sleep(600)
    ''')
    plugin = ExecPlugin(str(tmp_path / "plugin.py"), (), (), V1, "Never", False, WHERE)
    with pytest.raises(KubeconfigError, match=r"^kubeconfig K: users\[name=u\]\.user\.exec: .* did not answer "
                                              r"within 1s; stopped$"):
        asyncio.run(plugin.run(timeout=1.0))
    assert _pid_gone(int(pidfile.read_text()))


def test_a_plugin_that_prints_without_end_is_stopped_at_its_size_bound(tmp_path: Path) -> None:
    _plugin(tmp_path, '''
        while True:
            sys.stdout.write("x" * 65536)
    ''')
    plugin = ExecPlugin(str(tmp_path / "plugin.py"), (), (), V1, "Never", False, WHERE)
    with pytest.raises(KubeconfigError, match=r"printed more than 100000 bytes; stopped$"):
        asyncio.run(plugin.run(timeout=60.0, max_output=100_000))


def test_a_plugin_answering_client_certificates(tmp_path: Path) -> None:
    pem = PEM.decode()
    _plugin(tmp_path, f'''
        print(json.dumps({{"apiVersion": "{V1}", "kind": "ExecCredential",
                          "status": {{"clientCertificateData": {pem!r}, "clientKeyData": {pem!r}}}}}))
    ''')
    creds = _load(_write(tmp_path / "config", _config(user={"exec": {"command": str(tmp_path / "plugin.py"),
                                                                        "apiVersion": V1}})))
    assert creds.cert_file and Path(creds.cert_file).read_bytes() == PEM
    assert creds.key_file and Path(creds.key_file).read_bytes() == PEM and creds.api_key == {}


@pytest.mark.parametrize(("out", "said"), [
    (b"not json", "not JSON"),
    (b"[]", "expected a JSON object"),
    (_answer(version="client.authentication.k8s.io/v1beta1").encode(), "apiVersion: expected " + V1),
    (json.dumps({"apiVersion": V1, "kind": "ExecCredential", "status": {}}).encode(), "status: expected a token"),
    (json.dumps({"apiVersion": V1, "kind": "ExecCredential", "status": {"token": 5}}).encode(),
     "status.token: expected a string"),
    (_answer(expires="tomorrow").encode(), "status.expirationTimestamp: expected an RFC 3339 time"),
])
def test_a_malformed_exec_credential_is_one_line(out: bytes, said: str) -> None:
    with pytest.raises(KubeconfigError) as caught:
        parse_exec_credential(out, V1, "kubeconfig K: users[name=u].user.exec")
    assert str(caught.value).startswith("kubeconfig K: users[name=u].user.exec: the plugin's answer: ")
    assert said in str(caught.value) and SECRET not in str(caught.value)


# -- in-cluster --------------------------------------------------------------------------------------------------------

def test_in_cluster_credentials_read_the_mounted_account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "token").write_text(SECRET + "\n")
    (tmp_path / "ca.crt").write_bytes(PEM)
    monkeypatch.setattr(credentials, "_SA_TOKEN", tmp_path / "token")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    creds = credentials.in_cluster_credentials()
    assert (creds.host, creds.ssl_ca_cert) == ("https://[fd00::1]:443", str(tmp_path / "ca.crt"))
    assert creds.api_key == {"BearerToken": f"Bearer {SECRET}"} and isinstance(creds.refresher, TokenFile)
    (tmp_path / "token").write_text("")
    with pytest.raises(ConfigError, match=rf"^in-cluster credentials: token file {tmp_path / 'token'}: empty$"):
        credentials.in_cluster_credentials()
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT")
    with pytest.raises(ConfigError, match=r"^in-cluster credentials: KUBERNETES_SERVICE_HOST/PORT are not set$"):
        credentials.in_cluster_credentials()


# -- fuzz --------------------------------------------------------------------------------------------------------------

_KEYS = st.sampled_from(["name", "cluster", "user", "context", "server", "current-context", "clusters", "users",
                         "contexts", "certificate-authority-data", "client-key-data", "insecure-skip-tls-verify",
                         "token", "tokenFile", "username", "password", "exec", "command", "apiVersion", "args",
                         "env", "proxy-url", "tls-server-name"])
_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.just("https://127.0.0.1:6443"), st.just("c"),
                    st.just("u"), st.just("k"), st.just(V1), st.just("opd-no-such-plugin"), st.text(max_size=8))
# The secret is the value of a credential's key, wherever in the tree: names (of contexts, clusters and
# users) are not credentials, and an error names the one it did not find, as kubectl does.
_CREDENTIALS = st.dictionaries(st.sampled_from(["token", "password", "client-key-data"]), st.just(SECRET),
                               min_size=1, max_size=3)
_TREE = st.recursive(_LEAVES, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=5)
                     | _CREDENTIALS, max_leaves=30)
_NEAR = st.builds(lambda base, extra: {**base, **extra},
                  st.just(_config(user={"token": SECRET})), st.dictionaries(_KEYS, _TREE, max_size=3))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.one_of(_TREE, _NEAR), text=st.one_of(st.none(), st.text(max_size=80)))
def test_any_kubeconfig_is_credentials_or_one_line(doc: Any, text: str | None, tmp_path: Path) -> None:
    """Any document (or any text) is credentials or one line that never quotes a value of it."""
    path = tmp_path / "config"
    path.write_text(f"{text}\ntoken: *{SECRET}\n" if text is not None else yaml.safe_dump(doc))
    try:
        creds = _load(path)
    except ConfigError as exc:
        assert "\n" not in str(exc) and SECRET not in str(exc) and str(exc).startswith("kubeconfig ")
    else:
        assert creds.host.startswith(("https://", "http://")) and SECRET not in repr(creds)


@settings(max_examples=300, deadline=None)
@given(out=st.one_of(st.binary(max_size=200), st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10), st.just(V1), st.just("ExecCredential"),
              st.just("2099-01-01T00:00:00Z"), st.just(SECRET)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["apiVersion", "kind", "status", "token", "clientCertificateData", "clientKeyData",
                         "expirationTimestamp"]), inner, max_size=4), max_leaves=20).map(
    lambda doc: json.dumps(doc).encode())))
def test_any_plugin_output_is_a_credential_or_one_line(out: bytes) -> None:
    try:
        answer = parse_exec_credential(out, V1, "kubeconfig K: users[name=u].user.exec")
    except KubeconfigError as exc:
        assert "\n" not in str(exc) and SECRET not in str(exc)
    else:
        assert isinstance(answer, ExecCredential) and (answer.token or (answer.certificate and answer.key))
        assert SECRET not in repr(answer)
