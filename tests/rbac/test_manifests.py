"""Manifests (pure logic): the YAML writer, the config file as a pod runs it, the Deployment, the Containerfile."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

import opd
from opd.errors import OpdError
from opd.rbac import deployment, generate, podconfig
from opd.rbac.podconfig import pod_config
from opd.rbac.yamltext import Commented, Document, dump
from opd.service import config
from opd.service import plugins as daemon_plugins

REPO = Path(__file__).resolve().parents[2]

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


# -- secrets out of the ConfigMap, identities and Leases (issue #18) ------------------------------------------------

SECRETIVE = '''# my config
[opd]
namespaces = ["a"]
# password = "old-hunter2"

[plugins.hello]
api_token = "tok-123456"   # named like a secret
greeting = "greet-424242"  # declared secret by the plugin
plain = "shown"
objects = [
  { name = "x", token = "tok-arr-777" },
]
[plugins.hello.auth]
user = "u"
passwd = "pass-4242"
[plugins.hello.deeper.still]
client_secret = "cs-31337"
kept = 1
[[plugins.hello.items]]
name = "a"
private_key = "pk-5555"
[[plugins.hello.items]]
name = "b"
'''
SECRET_VALUES = ["tok-123456", "greet-424242", "tok-arr-777", "pass-4242", "cs-31337", "pk-5555", "old-hunter2"]


def _for_pod(text: str, tmp_path: Path, **kwargs: Any) -> tuple[podconfig.PodConfig, config.DaemonConfig]:
    path = tmp_path / "opd.toml"
    path.write_text(text)
    cfg = config.load(path, env={})
    return podconfig.for_pod(cfg, text, **kwargs), cfg


def test_secrets_leave_the_configmap_for_a_secret_the_pod_overlays(tmp_path: Path) -> None:
    """Before: a nested secret and an option declared secret went into the ConfigMap as written."""
    pod, cfg = _for_pod(SECRETIVE, tmp_path, declared={"hello": ["greeting"]})
    for value in SECRET_VALUES:
        assert value not in pod.text, value
    assert pod.secrets is not None and not pod.rewritten
    assert "# my config\n" in pod.text and 'plain = "shown"' in pod.text  # the file, comments and all
    assert set(pod.moved) == {"[plugins.hello].api_token", "[plugins.hello].greeting", "[plugins.hello].objects",
                              "[plugins.hello.auth].passwd", "[plugins.hello.deeper.still].client_secret",
                              "[plugins.hello].items"}
    # What the pod reads (the ConfigMap's file overlaid with the Secret's) is the user's config.
    back = config.parse(pod.text, path=cfg.path, secrets=(pod.secrets, Path("secrets.toml")))
    assert back == pod.config
    assert back.plugins.tables["hello"].options == cfg.plugins.tables["hello"].options
    assert back.plugins.tables["hello"].options["deeper"] == {"still": {"client_secret": "cs-31337", "kept": 1}}


def test_a_secret_the_lines_cannot_be_cut_from_rewrites_the_file(tmp_path: Path) -> None:
    text = '[plugins.hello]\n# a comment\nauth = { user = "u", password = "pw-inline-1" }\n'
    pod, cfg = _for_pod(text, tmp_path)
    assert pod.rewritten and "pw-inline-1" not in pod.text and "# a comment" not in pod.text
    assert pod.config.plugins.tables["hello"].options == cfg.plugins.tables["hello"].options
    # A secret also written in a comment: cut lines would still show it, so the file is written anew.
    text = '[plugins.hello]\ntoken = "tok-in-comment"  # was tok-in-comment before\n# tok-in-comment\n'
    pod, _ = _for_pod(text, tmp_path)
    assert pod.rewritten and "tok-in-comment" not in pod.text


def test_no_secrets_no_secret(tmp_path: Path) -> None:
    pod, _ = _for_pod('[plugins.hello]\nplain = 1\n', tmp_path)
    assert pod.secrets is None and pod.moved == () and not pod.rewritten


def test_the_secret_is_mounted_beside_the_config_and_named_to_opd_start(tmp_path: Path) -> None:
    pod, _ = _for_pod(SECRETIVE, tmp_path)
    assert pod.secrets is not None
    doc = deployment.secret("opd", "ops", pod.secrets, pod.moved)
    secret = yaml.safe_load(dump([doc]))
    assert secret["kind"] == "Secret" and secret["stringData"] == {"secrets.toml": pod.secrets}
    body = deployment.deployment(pod.config, "opd", "ops", "opd:test", pod.text, secrets=True).body
    spec = yaml.safe_load(dump([Document(body)]))["spec"]["template"]["spec"]
    [container] = spec["containers"]
    assert {"name": "OPD_CONFIG_SECRETS", "value": "/etc/opd/secrets.toml"} in container["env"]
    [volume] = [v for v in spec["volumes"] if v["name"] == "config"]
    assert volume["projected"]["defaultMode"] == 0o440
    assert volume["projected"]["sources"] == [
        {"configMap": {"name": "opd", "items": [{"key": "opd.toml", "path": "opd.toml"}]}},
        {"secret": {"name": "opd", "items": [{"key": "secrets.toml", "path": "secrets.toml"}]}}]
    for value in SECRET_VALUES:  # and not in the pod template (no digest of the Secret either)
        assert value not in dump([Document(body)])


def test_every_pod_is_its_own_ha_identity() -> None:
    """Before: no identity from the pod; with the default <hostname>-<pid> two containers could collide."""
    for ha in ("", '[ha]\nmode = "leader"\n'):
        [container] = _deployment(ha)["spec"]["template"]["spec"]["containers"]
        assert {"name": "OPD_HA_IDENTITY", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in \
            container["env"]
        assert "OPD_CONFIG_SECRETS" not in str(container["env"])


def test_a_fixed_identity_with_replicas_is_refused_in_one_line() -> None:
    """Before: `[ha] identity = "x"` rendered 2 replicas sharing it (both held the Lease: split brain)."""
    with pytest.raises(OpdError) as caught:
        _deployment('[ha]\nmode = "leader"\nidentity = "x"\n')
    message = str(caught.value)
    assert "[ha].identity = 'x' with 2 replicas" in message and "\n" not in message
    with pytest.raises(OpdError, match="with 3 replicas"):
        _deployment('[ha]\nmode = "shards"\nshards = 4\nidentity = "x"\n')
    assert _deployment('[ha]\nmode = "shards"\nshards = 1\nidentity = "x"\n')["spec"]["replicas"] == 1


def test_the_lease_is_the_deployments_in_its_namespace_unless_the_file_names_it(tmp_path: Path) -> None:
    """Before: Lease "opd" in "default", shared by every installation that kept the defaults."""
    pod, _ = _for_pod('[ha]\nmode = "leader"\n', tmp_path, name="team-opd", namespace="ops")
    assert (pod.config.ha.lease, pod.config.ha.lease_namespace) == ("team-opd", "ops")
    assert config.parse(pod.text).ha == pod.config.ha
    pod, _ = _for_pod('[ha]\nmode = "leader"\nlease = "opd"\n', tmp_path, name="team-opd", namespace="ops")
    assert (pod.config.ha.lease, pod.config.ha.lease_namespace) == ("opd", "ops")  # as written, even the default
    pod, _ = _for_pod('[ha]\nmode = "shards"\nshards = 2\nlease_namespace = "coord"\n', tmp_path, name="x",
                      namespace="ops")
    assert (pod.config.ha.lease, pod.config.ha.lease_namespace) == ("x", "coord")
    pod, _ = _for_pod('[opd]\nlog_level = "debug"\n', tmp_path, name="x", namespace="ops")
    assert "[ha]" not in pod.text  # no replicas, no Lease


def test_a_long_multi_line_secret_is_cut_or_rewritten_quickly(tmp_path: Path) -> None:
    items = "".join(f'  "tok-{i:05}",\n' for i in range(5000))
    text = f'# kept\n[plugins.hello]\ntokens = [\n{items}]\nplain = 1\n'
    pod, _ = _for_pod(text, tmp_path)
    assert pod.rewritten and "tok-00001" not in pod.text and pod.moved == ("[plugins.hello].tokens",)
    short = '# kept\n[plugins.hello]\ntokens = [\n  "tok-1",\n  "tok-2",\n]\nplain = 1\n'
    pod, _ = _for_pod(short, tmp_path)
    assert not pod.rewritten and "tok-" not in pod.text and "# kept" in pod.text
