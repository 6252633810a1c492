"""RBAC and manifests on the real API server: accepted as written, enough for every plugin and no more,
a plugin's call outside its rules refused in one line, the CLI's errors, in-cluster credentials."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers.operators import eventually
from kubernetes_asyncio import client
from kubernetes_asyncio.config import incluster_config

from opd.kube import credentials
from opd.kube.api import APIError, KubeClient
from opd.service import config


def _env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("OPD_") and k not in ("PYTHONPATH", "KUBECONFIG", "JOURNAL_STREAM", "NOTIFY_SOCKET")}
    return {**clean, **extra}


def _opd(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "opd", *map(str, args)], capture_output=True, text=True,
                          timeout=90, env=env or _env())


def _start(path: Path, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "opd", "start", "--config", str(path)], stdout=out,
                                stderr=subprocess.STDOUT, env=env)


async def _kubectl(kubeconfig: Path, *args: str, stdin: str | None = None, check: bool = True) -> tuple[int, str]:
    """kubectl's exit code and output (stdout; stderr after it when it fails)."""
    proc = await asyncio.create_subprocess_exec(
        "kubectl", "--kubeconfig", str(kubeconfig), *args, stdin=subprocess.PIPE if stdin is not None else None,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
    if check:
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: {err.decode()}"
    return proc.returncode or 0, out.decode() + (err.decode() if proc.returncode else "")


def _kinds(text: str) -> list[tuple[str, str | None]]:
    return [(d["kind"], d["metadata"].get("namespace")) for d in yaml.safe_load_all(text) if d]


EXAMPLES = """
[opd]
namespaces = ["{ns}"]
shutdown_timeout = 3
log_format = "text"

[kubernetes]
kubeconfig = "{kubeconfig}"

[plugins]
enable = [{enable}]

[plugins.mirror]
resync = 0
[[plugins.mirror.rules]]
from = "{ns}"
to = [{targets}]

[plugins.ttl]
interval = 1

[plugins.nsdefaults]
include = ["{ns}-new*"]
"""


# -- accepted by the API server --------------------------------------------------------------------------------------


async def test_rbac_and_manifests_are_accepted_by_the_api_server(kubeconfig: Path, namespace: str,
                                                               tmp_path: Path) -> None:
    path = tmp_path / "opd.toml"
    path.write_text(EXAMPLES.format(ns=namespace, kubeconfig="/nowhere/kubeconfig", targets='"default"',
                                    enable='"mirror", "ttl", "nsdefaults"')
                    + f'\n[ha]\nmode = "leader"\nlease_namespace = "{namespace}"\n')
    rbac = _opd("rbac", "--config", path, "--kubeconfig", kubeconfig, "--namespace", namespace)
    assert rbac.returncode == 0, rbac.stderr
    assert _kinds(rbac.stdout) == [
        ("ServiceAccount", namespace), ("ClusterRole", None), ("ClusterRoleBinding", None),
        ("Role", "default"), ("RoleBinding", "default"), ("Role", namespace), ("RoleBinding", namespace)]
    _, said = await _kubectl(kubeconfig, "apply", "--dry-run=server", "-f", "-", stdin=rbac.stdout)
    assert said.count("created (server dry run)") == 7, said

    manifests = _opd("manifests", "--config", path, "--kubeconfig", kubeconfig, "--namespace", namespace,
                     "--image", "registry.example/opd:1")
    assert manifests.returncode == 0, manifests.stderr
    docs = list(yaml.safe_load_all(manifests.stdout))
    assert [d["kind"] for d in docs][-2:] == ["ConfigMap", "Deployment"]
    assert manifests.stdout.startswith(rbac.stdout.split("\n", 1)[0].replace("opd rbac", "opd manifests"))
    pod_config = config.parse(docs[-2]["data"]["opd.toml"])
    assert str(pod_config.opd.listen) == "0.0.0.0:8080"
    assert pod_config.kubernetes == config.KubernetesSection(in_cluster=True)
    assert pod_config.plugins.enable == ("mirror", "ttl", "nsdefaults")
    assert docs[-1]["spec"]["replicas"] == 2  # [ha] mode = "leader": a standby
    _, said = await _kubectl(kubeconfig, "apply", "--dry-run=server", "-f", "-", stdin=manifests.stdout)
    assert "deployment.apps/opd created (server dry run)" in said, said
    assert said.count("created (server dry run)") == 9, said


# -- the CLI's errors ------------------------------------------------------------------------------------------------


def _one_line_error(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode == 1, result
    assert result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in lines[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["rbac", "manifests"])
def test_a_bad_config_is_one_line(command: str, tmp_path: Path) -> None:
    path = tmp_path / "opd.toml"
    path.write_text('[opd]\nlog_level = "loud"\n')
    _one_line_error(_opd(command, "--config", path, "--kubeconfig", tmp_path / "none"),
                    f"{path}: [opd].log_level: expected one of")


@pytest.mark.parametrize("command", ["rbac", "manifests"])
def test_an_unreachable_cluster_is_one_line(command: str, tmp_path: Path) -> None:
    path = tmp_path / "opd.toml"
    path.write_text('[plugins]\nenable = ["ttl"]\n')
    unreachable = tmp_path / "kubeconfig"
    unreachable.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "x", "cluster": {"server": "https://127.0.0.1:1", "insecure-skip-tls-verify": True}}],
        "users": [{"name": "x", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}]}))
    started = time.monotonic()
    _one_line_error(_opd(command, "--config", path, "--kubeconfig", unreachable),
                    "Error: cannot reach the API server at https://127.0.0.1:1")
    assert time.monotonic() - started < 30
    _one_line_error(_opd(command, "--config", path, "--kubeconfig", tmp_path / "missing"),
                    f"kubeconfig {tmp_path / 'missing'}: no such file")


def test_a_resource_not_served_or_a_broken_plugin_is_one_line(kubeconfig: Path, tmp_path: Path) -> None:
    path = tmp_path / "opd.toml"
    path.write_text('[plugins]\nenable = ["ttl"]\n[plugins.ttl]\nresources = ["widgets"]\n')
    _one_line_error(_opd("rbac", "--config", path, "--kubeconfig", kubeconfig),
                    "Error: plugin 'ttl': resource widgets is not served by the API server")
    path.write_text('[plugins]\nenable = ["ttl"]\n[plugins.ttl]\ninterval = "often"\n')
    _one_line_error(_opd("rbac", "--config", path, "--kubeconfig", kubeconfig),
                    "Error: plugin 'ttl' cannot load: [plugins.ttl].interval: ", "its permissions cannot be derived")
    path.write_text('[plugins]\nenable = ["nsdefaults"]\n[[plugins.nsdefaults.objects]]\napiVersion = "v1"\n'
                    'kind = "Widget"\nmetadata = { name = "w" }\n')
    _one_line_error(_opd("rbac", "--config", path, "--kubeconfig", kubeconfig),
                    "Error: plugin 'nsdefaults': opd_rbac failed: ConfigError: [plugins.nsdefaults].objects[0]: "
                    "the API server serves no kind Widget in v1")


# -- enough for every plugin, and no more ------------------------------------------------------------------------------

PROBE = '''
"""A plugin that reads what its opd_rbac declares, and lists what it does not."""
import opd
from opd.kube import plain

@opd.hookimpl
def opd_register(registry, config):
    @opd.on.create("configmaps", registry=registry, labels={"opd.test/probe": opd.PRESENT})
    async def declared(api, namespace, **_):
        found = await plain.request(api, "GET", f"/api/v1/namespaces/{namespace}/serviceaccounts/probe-target")
        return found["metadata"]["name"]

    @opd.on.create("configmaps", registry=registry, labels={"opd.test/probe": opd.PRESENT}, errors="permanent")
    async def undeclared(api, namespace, **_):
        await plain.request(api, "GET", f"/api/v1/namespaces/{namespace}/pods")

@opd.hookimpl
def opd_rbac():
    return [{"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get"], "resourceNames": ["probe-target"]}]
'''


def _probe_plugin(root: Path) -> Path:
    """The probe plugin, installed as a distribution on a path of its own (for PYTHONPATH)."""
    site = root / "site"
    (site / "opd_test_rbacprobe").mkdir(parents=True)
    (site / "opd_test_rbacprobe" / "__init__.py").write_text(textwrap.dedent(PROBE))
    info = site / "opd_test_rbacprobe-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: opd-test-rbacprobe\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[opd.plugins]\nrbacprobe = opd_test_rbacprobe\n")
    (info / "top_level.txt").write_text("opd_test_rbacprobe\n")
    return site


async def _limited_kubeconfig(kubeconfig: Path, namespace: str, account: str, path: Path) -> str:
    """A kubeconfig holding nothing but the ServiceAccount's token; returns the token."""
    _, token = await _kubectl(kubeconfig, "create", "token", account, "-n", namespace)
    _, raw = await _kubectl(kubeconfig, "config", "view", "--raw", "-o", "json")
    cfg = json.loads(raw)
    cfg["users"] = [{"name": account, "user": {"token": token.strip()}}]
    for ctx in cfg["contexts"]:
        ctx["context"]["user"] = account
    path.write_text(json.dumps(cfg))
    return token.strip()


async def _missing(read: Any) -> bool:
    try:
        await read()
    except client.ApiException as exc:
        return exc.status == 404
    return False


@pytest.mark.timeout(300)
async def test_each_plugin_works_with_only_the_derived_rbac(api: client.ApiClient, kubeconfig: Path,
                                                          namespace: str, tmp_path: Path) -> None:
    ns, target, fresh = namespace, f"{namespace}-b", f"{namespace}-new1"
    core = client.CoreV1Api(api)
    await core.create_namespace({"metadata": {"name": target}})  # type: ignore[arg-type]
    await core.create_namespaced_service_account(ns, {"metadata": {"name": "probe-target"}})  # type: ignore[arg-type]
    limited = tmp_path / "limited.kubeconfig"
    path = tmp_path / "opd.toml"
    path.write_text(EXAMPLES.format(ns=ns, kubeconfig=limited, targets=f'"{target}"',
                                    enable='"mirror", "ttl", "nsdefaults", "rbacprobe"'))
    env = _env(PYTHONPATH=str(_probe_plugin(tmp_path)))
    made = _opd("rbac", "--config", path, "--kubeconfig", kubeconfig, "--namespace", ns, env=env)
    assert made.returncode == 0, made.stderr
    rbac = made.stdout
    await _kubectl(kubeconfig, "apply", "-f", "-", stdin=rbac)
    log = tmp_path / "opd.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        await _limited_kubeconfig(kubeconfig, ns, "opd", limited)
        proc = _start(path, log, env)
        await eventually(lambda: "ready" in log.read_text(), timeout=60)

        # The probe plugin: what it declared works, what it did not is refused, in one line.
        await core.create_namespaced_config_map(ns, {"metadata": {  # type: ignore[arg-type]
            "name": "probe", "labels": {"opd.test/probe": "yes"}}})

        async def probed() -> Any:
            found = await core.read_namespaced_config_map("probe", ns)
            return (found.metadata.annotations or {}).get("rbacprobe.opd.dev/result.declared")

        assert json.loads(await eventually(probed)) == "probe-target"
        refused = await eventually(lambda: [
            line for line in log.read_text().splitlines() if "undeclared" in line and "403" in line])
        assert "(403) Forbidden: pods is forbidden: User" in refused[0], refused  # the server's words, not headers

        # The others keep working. mirror: a Secret copied into its allowed target.
        await core.create_namespaced_secret(ns, {"metadata": {  # type: ignore[arg-type]
            "name": "shared", "labels": {"opd.dev/mirror": "true"}, "annotations": {"opd.dev/mirror-to": target}},
            "stringData": {"k": "v"}})

        async def copied() -> Any:
            try:
                return (await core.read_namespaced_secret("shared", target)).data
            except client.ApiException:
                return None

        assert await eventually(copied) == {"k": "dg=="}
        # ttl: an expired ConfigMap deleted.
        await core.create_namespaced_config_map(ns, {"metadata": {  # type: ignore[arg-type]
            "name": "short", "annotations": {"opd.dev/ttl": "1"}}})
        await eventually(lambda: _missing(lambda: core.read_namespaced_config_map("short", ns)), timeout=30)
        # nsdefaults: a new namespace gets its ConfigMap.
        await core.create_namespace({"metadata": {"name": fresh}})  # type: ignore[arg-type]
        await eventually(lambda: _has_defaults(core, fresh), timeout=30)

        text = log.read_text()
        assert "Traceback" not in text, text
        assert "was refused" not in text  # none of opd's own writes: its rules cover them
        assert "403" not in text.replace(refused[0], "")  # the one refusal is the undeclared call's
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for name in (target, fresh):
            with contextlib.suppress(client.ApiException):
                await core.delete_namespace(name)

    # Nothing broader than what the plugins need.
    async def can(verb: str, what: str, where: str | None) -> bool:
        scope = ["-n", where] if where else []
        code, said = await _kubectl(kubeconfig, "auth", "can-i", verb, what, *scope,
                                    f"--as=system:serviceaccount:{ns}:opd", check=False)
        assert code in (0, 1), said
        return code == 0

    other = f"{ns}-c"
    expected = [
        # the handlers' resources where the plugins run (opd), and each plugin's own calls (opd_rbac)
        ("watch", "configmaps", ns, True), ("patch", "secrets", ns, True), ("create", "events", ns, True),
        ("delete", "configmaps", ns, True),  # ttl
        ("create", "secrets", target, True), ("delete", "secrets", target, True),  # mirror, its allowed target
        ("list", "secrets", target, True),  # mirror finds its copies by label in its rules' targets, and only there
        ("get", "serviceaccounts/probe-target", ns, True),  # the probe, by name
        ("patch", "namespaces", None, True), ("create", "configmaps", other, True),  # nsdefaults
        ("create", "events", "default", True),  # Events about namespaces
        # and nothing else
        ("list", "secrets", other, False), ("list", "configmaps", other, False),
        ("list", "pods", ns, False), ("get", "serviceaccounts/other", ns, False), ("get", "secrets", other, False),
        ("create", "secrets", other, False), ("delete", "configmaps", other, False), ("watch", "secrets", other, False),
        ("update", "configmaps", ns, False), ("delete", "namespaces", None, False), ("create", "events", other, False),
        ("create", "leases", ns, False), ("list", "customresourcedefinitions", None, False),
        ("create", "deployments", ns, False), ("delete", "secrets", ns, False), ("create", "roles", ns, False),
    ]
    try:
        answers = [(verb, what, where, await can(verb, what, where)) for verb, what, where, _ in expected]
        assert answers == expected
    finally:
        await _kubectl(kubeconfig, "delete", "--ignore-not-found", "--wait=false", "-f", "-", stdin=rbac)


async def _has_defaults(core: client.CoreV1Api, namespace: str) -> bool:
    try:
        found = await core.read_namespaced_config_map("defaults", namespace)
    except client.ApiException:
        return False
    return bool(found.data == {"namespace": namespace})


# -- in-cluster credentials --------------------------------------------------------------------------------------------


async def test_in_cluster_credentials_use_the_account_and_its_rotated_token(
        api: client.ApiClient, kubeconfig: Path, namespace: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A pod's service account (token file, CA, $KUBERNETES_SERVICE_HOST/PORT), through kubernetes_asyncio,
    against the real API server: its identity is the account's, and a token rotated in the file is used."""
    core = client.CoreV1Api(api)
    await core.create_namespaced_service_account(namespace, {"metadata": {"name": "pod"}})  # type: ignore[arg-type]
    rbac = client.RbacAuthorizationV1Api(api)
    await rbac.create_namespaced_role(namespace, {"metadata": {"name": "pod"}, "rules": [  # type: ignore[arg-type]
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]})
    await rbac.create_namespaced_role_binding(namespace, {  # type: ignore[arg-type]
        "metadata": {"name": "pod"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod"},
        "subjects": [{"kind": "ServiceAccount", "name": "pod", "namespace": namespace}]})
    _, token = await _kubectl(kubeconfig, "create", "token", "pod", "-n", namespace)
    _, raw = await _kubectl(kubeconfig, "config", "view", "--raw", "--flatten", "-o", "json")
    server = json.loads(raw)["clusters"][0]["cluster"]
    mounted = tmp_path / "serviceaccount"
    mounted.mkdir()
    (mounted / "ca.crt").write_bytes(base64.b64decode(server["certificate-authority-data"]))
    (mounted / "token").write_text("not-a-token")
    host, port = server["server"].removeprefix("https://").rsplit(":", 1)
    monkeypatch.setattr(credentials, "_SA_TOKEN", mounted / "token")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(mounted / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(mounted / "ca.crt"))
    monkeypatch.setattr(incluster_config, "TOKEN_REFRESH_PERIOD", datetime.timedelta(0))  # re-read at once
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    monkeypatch.delenv("KUBECONFIG", raising=False)

    configuration, source = await credentials.load_configuration(credentials.Login())
    assert source == "in-cluster service account"
    async with KubeClient(configuration) as kube:
        with pytest.raises(APIError) as caught:
            await kube.get(f"/api/v1/namespaces/{namespace}/configmaps")
        assert caught.value.status == 401  # the file's first token is no token
        (mounted / "token").write_text(token.strip())  # the kubelet rotates the projected token
        listed = await kube.get(f"/api/v1/namespaces/{namespace}/configmaps")
        assert listed["kind"] == "ConfigMapList"
        with pytest.raises(APIError) as caught:  # the account's identity, not the admin's
            await kube.get(f"/api/v1/namespaces/{namespace}/secrets")
        assert caught.value.status == 403
        assert f"system:serviceaccount:{namespace}:pod" in caught.value.message


# -- secrets, identities, risky rules (issue #18) ----------------------------------------------------------------------

VAULTED = '''
"""A plugin with a required secret option, a key named like a secret, and a wildcard rule on request."""
import opd

@opd.hookimpl
def opd_options():
    return [opd.Option("greeting", str, secret=True), opd.Option("settings", dict, default={}),
            opd.Option("everything", bool, default=False)]

@opd.hookimpl
def opd_register(registry, config):
    @opd.on.create("configmaps", registry=registry, labels={"opd.test/vaulted": opd.PRESENT})
    def made(**_):
        return config["greeting"]

@opd.hookimpl
def opd_rbac(config):
    if config["everything"]:
        return [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"], "clusterwide": True}]
    return []
'''


def _plugin_site(root: Path, name: str, code: str) -> Path:
    site = root / f"site-{name}"
    module = f"opd_test_{name}"
    (site / module).mkdir(parents=True)
    (site / module / "__init__.py").write_text(textwrap.dedent(code))
    info = site / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: opd-test-{name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[opd.plugins]\n{name} = {module}\n")
    (info / "top_level.txt").write_text(f"{module}\n")
    return site


VAULTED_CONFIG = """
# the team's opd
[opd]
namespaces = ["{ns}"]

[plugins]
enable = ["vaulted"]

[plugins.vaulted]
greeting = "greet-s3cret-4242"        # declared secret by the plugin
everything = {everything}

[plugins.vaulted.settings]
colour = "blue"
[plugins.vaulted.settings.db]
password = "pw-s3cret-1717"

[ha]
mode = "leader"
"""


async def test_manifests_keep_secrets_out_of_the_configmap_and_pods_apart(kubeconfig: Path, namespace: str,
                                                                        tmp_path: Path) -> None:
    """Before: the declared-secret option and the nested password were in the ConfigMap; both pods were free to
    share an identity; the Lease was "opd" in "default". Now: a Secret beside the ConfigMap, applied by the API
    server (dry run) with the Deployment's downward-API identity; the pod's two files make the user's config."""
    path = tmp_path / "opd.toml"
    path.write_text(VAULTED_CONFIG.format(ns=namespace, everything="false"))
    env = _env(PYTHONPATH=str(_plugin_site(tmp_path, "vaulted", VAULTED)))
    made = _opd("manifests", "--config", path, "--kubeconfig", kubeconfig, "--namespace", namespace,
                "--name", "team-opd", env=env)
    assert made.returncode == 0, made.stderr
    assert "risky" not in made.stderr
    docs = {d["kind"]: d for d in yaml.safe_load_all(made.stdout) if d}
    configmap, secret, dep = docs["ConfigMap"], docs["Secret"], docs["Deployment"]
    public, private = configmap["data"]["opd.toml"], secret["stringData"]["secrets.toml"]
    for value in ("greet-s3cret-4242", "pw-s3cret-1717"):
        assert value not in public and value in private
        assert value not in json.dumps([configmap, dep])
    assert "# the team's opd" in public and "# declared secret" not in public  # its line went with the value
    pod = dep["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert {"name": "OPD_HA_IDENTITY", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in container["env"]
    assert {"name": "OPD_CONFIG_SECRETS", "value": "/etc/opd/secrets.toml"} in container["env"]
    assert dep["spec"]["replicas"] == 2
    # The Lease: the deployment's, in its namespace; its RBAC by that name.
    pod_config = config.parse(public)
    assert (pod_config.ha.lease, pod_config.ha.lease_namespace) == ("team-opd", namespace)
    [role] = [d for d in yaml.safe_load_all(made.stdout) if d and d["kind"] == "Role"
              and d["metadata"]["namespace"] == namespace]
    assert {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "list", "update", "watch"],
            "resourceNames": ["team-opd"]} in role["rules"]  # the watch names the Lease too

    _, said = await _kubectl(kubeconfig, "apply", "--dry-run=server", "-f", "-", stdin=made.stdout)
    assert "secret/team-opd created (server dry run)" in said, said
    assert "deployment.apps/team-opd created (server dry run)" in said, said
    assert said.count("created (server dry run)") == 6, said

    # What the pod reads: the ConfigMap's file alone lacks the required secret option; with the Secret's
    # file overlaid (as the Deployment sets it), the config and the plugin's options check out.
    mounted = tmp_path / "etc-opd"
    mounted.mkdir()
    (mounted / "opd.toml").write_text(public)
    (mounted / "secrets.toml").write_text(private)
    alone = _opd("config", "check", mounted / "opd.toml", env=env)
    assert alone.returncode == 1 and "[plugins.vaulted].greeting: required" in alone.stderr, alone.stderr
    overlaid = {**env, "OPD_CONFIG_SECRETS": str(mounted / "secrets.toml")}
    both = _opd("config", "check", mounted / "opd.toml", env=overlaid)
    assert both.returncode == 0, both.stderr
    shown = _opd("config", "show", mounted / "opd.toml", env=overlaid)
    assert shown.returncode == 0, shown.stderr
    assert 'colour = "blue"' in shown.stdout
    assert "s3cret" not in shown.stdout


def test_a_fixed_identity_with_replicas_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "opd.toml"
    path.write_text('[ha]\nmode = "leader"\nidentity = "pod-a"\n')
    # Refused before the cluster is asked: the kubeconfig does not even exist.
    _one_line_error(_opd("manifests", "--config", path, "--kubeconfig", tmp_path / "none"),
                    f"Error: {path}: [ha].identity = 'pod-a' with 2 replicas")


@pytest.mark.parametrize("command", ["rbac", "manifests"])
def test_risky_rules_are_said_and_strict_refuses_them(command: str, kubeconfig: Path, namespace: str,
                                                      tmp_path: Path) -> None:
    """Before: a plugin's `*`/`*`/`*` came out silently under "allowed exactly what the enabled plugins need"."""
    path = tmp_path / "opd.toml"
    path.write_text(VAULTED_CONFIG.format(ns=namespace, everything="true"))
    env = _env(PYTHONPATH=str(_plugin_site(tmp_path, "vaulted", VAULTED)))
    args = (command, "--config", path, "--kubeconfig", kubeconfig, "--namespace", namespace)
    plain = _opd(*args, env=env)
    assert plain.returncode == 0, plain.stderr
    risky = [line for line in plain.stderr.splitlines() if line.startswith("warning: risky rule: ")]
    assert len(risky) == 1, plain.stderr
    assert risky[0].startswith(f"warning: risky rule: ClusterRole {namespace}:opd: rule {{apiGroups ['*'], "
                               "resources ['*'], verbs ['*']}: ")
    assert "(asked by plugin 'vaulted')" in risky[0]
    assert "# RISK: wildcard in verbs" in plain.stdout
    strict = _opd(*args, "--strict", env=env)
    _one_line_error(strict, "Error: --strict: 1 rule(s) with wildcards, escalate, bind, impersonate or Secrets")
    assert risky[0] in strict.stderr
