"""Manifests (pure logic): the YAML writer, the config file as a pod runs it, the Deployment, the Containerfile."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

import opd
from opd.daemon import config
from opd.daemon import plugins as daemon_plugins
from opd.errors import OpdError
from opd.rbac import deployment, generate
from opd.rbac.podconfig import pod_config
from opd.rbac.yamltext import Commented, Document, dump

REPO = Path(__file__).resolve().parent.parent

TRICKY = ["", "plain", "true", "yes", "No", "null", "~", "1.0", "0x10", "1e3", "10001", ".inf", "-", "- a", "a: b",
          "a:b", "#x", "x #y", "*", "&a", "!x", "{a}", "[x]", "@", "`", "%", "|", ">", "'q'", '"q"', " lead",
          "trail ", "ü nicode", "tab\there", "opd.dev/config-sha256", "/healthz", "a,b", "=", "?", "a\\b",
          "multi\nline\n", "no newline\nat end", "kept\n\n\n", "\nfirst empty", "  indented\nsecond\n",
          "ctrl\x01char\n", "cr\r\nlf\n", "spaces at end   \nx\n", "# a comment\n[opd]\nlisten = \"x\"\n",
          "unicode line\u2028sep\n", "\ttab first\n"]


@pytest.mark.parametrize("text", TRICKY)
def test_strings_read_back_as_written(text: str) -> None:
    doc = {"key": text, "list": [text, "x"], "nested": {"inner": [{"item": text}]}}
    assert yaml.safe_load(dump([Document(doc)])) == doc


def test_shapes_and_comments_read_back() -> None:
    body: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Thing", "count": 3, "ratio": 0.5, "on": True, "off": False, "none": None,
        "empty": {}, "nothing": [],
        "rules": [Commented({"apiGroups": [""], "verbs": ["get", "list"]}, ("why: this", "and: that")),
                  Commented({"apiGroups": ["apps"]}, ())],
        "deep": {"a": {"b": [{"c": 1, "d": [1, 2]}, [1, "x"], {}]}},
    }
    text = dump([Document(body, ("head line", "")), Document({"second": "doc"})])
    plain = {**body, "rules": [{"apiGroups": [""], "verbs": ["get", "list"]}, {"apiGroups": ["apps"]}]}
    assert list(yaml.safe_load_all(text)) == [plain, {"second": "doc"}]
    assert text.startswith("# head line\n#\napiVersion: v1\n")
    assert "\n# why: this\n# and: that\n- apiGroups: [\"\"]\n  verbs: [\"get\", \"list\"]\n" in text
    assert "\n---\n" in text


# -- the config file as a pod runs it ---------------------------------------------------------------------------------


def _pod(text: str, tmp_path: Path) -> tuple[str, config.DaemonConfig]:
    path = tmp_path / "opd.toml"
    path.write_text(text)
    cfg = config.load(path)
    edited = pod_config(cfg, text)
    return edited, config.parse(edited, path=path)


def test_the_pod_listens_everywhere_and_uses_its_service_account(tmp_path: Path) -> None:
    text = ('# my config\n[opd]\nnamespaces = ["a"]   # served\nlisten = "127.0.0.1:9100"\n\n'
            '[kubernetes]\nkubeconfig = "/home/me/.kube/config"  # mine\ncontext = "prod"\n\n'
            '[plugins]\nenable = ["ttl"]\n')
    edited, back = _pod(text, tmp_path)
    assert edited == ('# my config\n[opd]\nnamespaces = ["a"]   # served\nlisten = "0.0.0.0:9100"\n\n'
                      '[kubernetes]\nin_cluster = true\n\n[plugins]\nenable = ["ttl"]\n')
    assert back.opd.listen == config.Listen("0.0.0.0", 9100)
    assert back.kubernetes == config.KubernetesSection(in_cluster=True)


def test_missing_keys_and_tables_are_added(tmp_path: Path) -> None:
    edited, back = _pod('[opd]\nlog_level = "debug"\n[plugins.ttl]\ninterval = 5\n', tmp_path)
    assert edited == ('[opd]\nlisten = "0.0.0.0:8080"\nlog_level = "debug"\n[plugins.ttl]\ninterval = 5\n\n'
                      '[kubernetes]\nin_cluster = true\n')
    assert back.plugins.tables["ttl"].options == {"interval": 5}
    edited, back = _pod("", tmp_path)
    assert back.opd.listen == config.Listen("0.0.0.0", 8080) and back.kubernetes.in_cluster is True


def test_a_file_that_cannot_be_edited_so_is_one_line(tmp_path: Path) -> None:
    # Keys written as dotted keys at the top: adding an [opd] table would define it twice.
    with pytest.raises(OpdError) as caught:
        _pod('opd.log_level = "debug"\n', tmp_path)
    assert str(caught.value).startswith(f"{tmp_path / 'opd.toml'}: cannot set [opd].listen and [kubernetes]")
    assert "\n" not in str(caught.value)
    # A multi-line value the line editor would cut: caught by reading the result back.
    with pytest.raises(OpdError, match="cannot set"):
        _pod('[kubernetes]\ncontext = """\nprod"""\n', tmp_path)


# -- the Deployment ---------------------------------------------------------------------------------------------------


def _deployment(toml: str) -> dict[str, Any]:
    cfg = config.parse(toml)
    body = deployment.deployment(cfg, "opd", "ops", "opd:test", pod_config(cfg, toml)).body
    return dict(yaml.safe_load(dump([Document(body)])))


def test_the_deployment_is_locked_down_and_probed() -> None:
    dep = _deployment('[opd]\nlisten = "127.0.0.1:9100"\nshutdown_timeout = 6.5\n')
    pod = dep["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"] == ["opd", "start"]
    assert container["args"] == ["--config", "/etc/opd/opd.toml"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
        "runAsUser": 10001, "runAsGroup": 10001, "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["ports"] == [{"name": "http", "containerPort": 9100, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert pod["serviceAccountName"] == "opd"
    assert pod["terminationGracePeriodSeconds"] == 12
    assert {"name": "config", "mountPath": "/etc/opd", "readOnly": True} in container["volumeMounts"]
    assert {"name": "config", "configMap": {"name": "opd"}} in pod["volumes"]
    assert dep["spec"]["selector"]["matchLabels"] == dep["spec"]["template"]["metadata"]["labels"]


@pytest.mark.parametrize(("ha", "replicas", "strategy"), [
    ("", 1, "Recreate"),
    ('[ha]\nmode = "leader"\n', 2, "RollingUpdate"),
    ('[ha]\nmode = "shards"\nshards = 2\n', 2, "RollingUpdate"),
    ('[ha]\nmode = "shards"\nshards = 16\n', 3, "RollingUpdate"),
])
def test_replicas_follow_ha(ha: str, replicas: int, strategy: str) -> None:
    dep = _deployment(ha)
    assert dep["spec"]["replicas"] == replicas
    assert dep["spec"]["strategy"]["type"] == strategy


def test_a_changed_config_is_a_new_pod_template() -> None:
    one = _deployment('[opd]\nlog_level = "debug"\n')["spec"]["template"]["metadata"]["annotations"]
    two = _deployment('[opd]\nlog_level = "info"\n')["spec"]["template"]["metadata"]["annotations"]
    assert one["opd.dev/config-sha256"] != two["opd.dev/config-sha256"]


# -- the Containerfile (no container engine here: read, not built) -----------------------------------------------


def _containerfile() -> list[tuple[str, str]]:
    text = (REPO / "etc" / "Containerfile").read_text()
    joined = re.sub(r"\\\n", " ", text)
    return [(line.split(None, 1)[0], line.split(None, 1)[1].strip()) for line in joined.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def test_the_containerfile_installs_opd_and_every_example_plugin_from_what_it_copies() -> None:
    steps = _containerfile()
    assert steps[0] == ("FROM", "python:3.11-slim")
    copied: dict[str, str] = {}  # destination -> source
    for op, args in steps:
        if op == "COPY":
            *sources, dest = args.split()
            for source in sources:
                assert (REPO / source).exists(), source
                copied[dest.rstrip("/") + ("/" + Path(source).name if dest.endswith("/") else "")] = source
    [install] = [args for op, args in steps if op == "RUN" and "pip install" in args]
    targets = install.split("pip install", 1)[1].split("&&")[0].split()
    plugins = sorted(p.name for p in (REPO / "plugins").iterdir() if (p / "pyproject.toml").exists())
    assert sorted(Path(t).name for t in targets) == sorted(["opd", *plugins])  # every example plugin
    for target in targets:
        package = REPO if Path(target).name == "opd" else REPO / "plugins" / Path(target).name
        # What pip builds it from is there: its pyproject.toml, the readme it names, its packages.
        project = tomllib.loads((package / "pyproject.toml").read_text())
        needed = ["pyproject.toml", project["project"]["readme"]]
        needed += [pattern.rstrip("*") for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]]
        for name in needed:
            assert copied.get(f"{target}/{name}") == str((package / name).relative_to(REPO)), (target, name)


def test_the_image_runs_opd_start_as_the_deployments_non_root_user() -> None:
    steps = dict(_containerfile())
    assert steps["USER"] == f"{deployment.USER_ID}:{deployment.USER_ID}"
    assert steps["ENTRYPOINT"] == '["opd", "start"]'
    assert steps["CMD"] == f'["--config", "{deployment.CONFIG_DIR}/{deployment.CONFIG_FILE}"]'
    assert f"--uid {deployment.USER_ID}" in steps["RUN"]


# -- what the manifests cannot do -------------------------------------------------------------------------------------


def _plugin(name: str, registry: opd.OperatorRegistry) -> daemon_plugins.Plugin:
    scope = config.PluginConfig(namespaces=(), clusterwide=True, isolation="shared", options={})
    return daemon_plugins.Plugin(name=name, value=f"{name}:plugin", distribution=None, version=None, config=scope,
                                 registry=registry, settings=opd.OperatorSettings(),
                                 status=daemon_plugins.Status.LOADED)


def test_plugins_with_webhooks_are_said_to_need_a_way_in() -> None:
    """A Deployment with an admission plugin and no Service: the API server could never call it."""
    plain, admitting = opd.OperatorRegistry(), opd.OperatorRegistry()

    @opd.on.create("configmaps", registry=plain)
    def created(**_: Any) -> None: ...

    @opd.on.validate("configmaps", registry=admitting)
    def check(**_: Any) -> None: ...

    found = daemon_plugins.Discovery([_plugin("plain", plain), _plugin("admitting", admitting)])
    [warning] = generate.webhook_warnings(found)
    assert "admitting" in warning and "plain" not in warning and "Service" in warning
    assert generate.webhook_warnings(daemon_plugins.Discovery([_plugin("plain", plain)])) == []
