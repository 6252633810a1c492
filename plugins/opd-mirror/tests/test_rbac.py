"""What ``opd rbac`` derives for the mirror, against the local kube-apiserver's discovery, as an admin runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from loguru import logger
from opd.service import config, plugins


def opd_rbac(tmp_path: Path, kubeconfig: Path, toml: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "opd.toml"
    path.write_text(toml)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPD_") and k not in ("KUBECONFIG", "PYTHONPATH")}
    return subprocess.run([sys.executable, "-m", "opd", "rbac", "--config", str(path), "--kubeconfig", str(kubeconfig),
                           "--namespace", "opd-system"], capture_output=True, text=True, timeout=90, env=env)


def roles(output: str) -> dict[tuple[str, str | None], list[dict[str, Any]]]:
    """(kind, namespace) of each ClusterRole and Role, with its rules."""
    return {(doc["kind"], doc["metadata"].get("namespace")): doc.get("rules") or []
            for doc in yaml.safe_load_all(output) if doc and doc["kind"] in ("ClusterRole", "Role")}


def grants(rules: list[dict[str, Any]], resource: str) -> set[str]:
    return {verb for rule in rules if resource in rule.get("resources", []) for verb in rule["verbs"]}


MIRROR = """
[plugins]
enable = ["mirror"]
[plugins.mirror]
namespaces = ["platform"]
[[plugins.mirror.rules]]
from = "platform"
to = ["team-a"]
"""


@pytest.mark.apiserver
def test_a_namespaced_mirror_gets_namespaced_roles_only(tmp_path: Path, kubeconfig: Path) -> None:
    # issue #18: with namespaces = ["platform"] and one target, opd's account could list every Secret
    # of the cluster (a ClusterRole for the mirror's search of its copies, and for glob targets).
    made = opd_rbac(tmp_path, kubeconfig, MIRROR)
    assert made.returncode == 0, made.stderr
    found = roles(made.stdout)
    assert set(found) == {("Role", "platform"), ("Role", "team-a")}, sorted(found, key=str)
    assert grants(found["Role", "platform"], "secrets") == {"get", "list", "patch", "watch"}  # sources
    assert grants(found["Role", "team-a"], "secrets") == {"create", "delete", "get", "list", "patch"}  # copies
    assert not [rule for rule in found["Role", "team-a"] if "namespaces" in rule.get("resources", [])]


@pytest.mark.apiserver
def test_without_rules_the_mirror_asks_for_no_secrets(tmp_path: Path, kubeconfig: Path) -> None:
    toml = '[plugins]\nenable = ["mirror"]\n[plugins.mirror]\nnamespaces = ["platform"]\n'
    made = opd_rbac(tmp_path, kubeconfig, toml)
    assert made.returncode == 0, made.stderr
    for rules in roles(made.stdout).values():
        assert not grants(rules, "secrets"), rules


@pytest.mark.apiserver
def test_the_retired_keys_are_one_line(tmp_path: Path, kubeconfig: Path) -> None:
    old = MIRROR.replace('namespaces = ["platform"]', 'namespaces = ["platform"]\nallowed_targets = ["*"]')
    made = opd_rbac(tmp_path, kubeconfig, old)
    assert made.returncode != 0
    assert "[plugins.mirror].allowed_targets: no longer read: write one [[plugins.mirror.rules]]" in made.stderr
    assert "Traceback" not in made.stderr


@pytest.mark.apiserver
def test_served_everywhere_the_mirror_still_watches_only_its_sources(tmp_path: Path, kubeconfig: Path) -> None:
    # No namespaces in its table nor in [opd] (opd serves every namespace): the plugin's
    # opd_namespaces narrows it to its rules' from namespaces. Before, a ClusterRole let opd list
    # and watch every Secret of the cluster for its handlers.
    made = opd_rbac(tmp_path, kubeconfig, MIRROR.replace('namespaces = ["platform"]\n', "")
                    + '[[plugins.mirror.rules]]\nfrom = "apps"\nto = ["team-a", "team-b"]\n')
    assert made.returncode == 0, made.stderr
    found = roles(made.stdout)
    assert set(found) == {("Role", ns) for ns in ("apps", "platform", "team-a", "team-b")}, sorted(found, key=str)
    for source in ("apps", "platform"):
        assert grants(found["Role", source], "secrets") == {"get", "list", "patch", "watch"}


@pytest.mark.apiserver
def test_sources_opd_does_not_serve_are_one_line(tmp_path: Path, kubeconfig: Path) -> None:
    made = opd_rbac(tmp_path, kubeconfig, '[opd]\nnamespaces = ["elsewhere"]\n' + MIRROR.replace(
        'namespaces = ["platform"]\n', ""))
    assert made.returncode != 0
    assert ("Error: plugin 'mirror' cannot load: it needs namespaces platform, and [plugins.mirror].namespaces "
            "(else [opd].namespaces) serves none of them;") in made.stderr, made.stderr
    assert "Traceback" not in made.stderr


def _loaded(toml: str) -> Any:
    # The daemon's own loading, as opd start does it.
    found = plugins.load_all(config.parse(toml), env={})
    return next(p for p in found.plugins if p.name == "mirror")


RULES = '[[plugins.mirror.rules]]\nfrom = "team-x"\nto = ["a"]\n[[plugins.mirror.rules]]\nfrom = "apps"\nto = ["a"]\n'


@pytest.mark.parametrize(("scope", "served"), [
    ("", ("apps", "team-x")),  # served everywhere: only the rules' from namespaces
    ('[opd]\nnamespaces = ["team-*"]\n', ("team-x",)),  # a pattern: the names it matches
    ('[opd]\nnamespaces = ["team-x", "apps", "other"]\n', ("apps", "team-x")),
])
def test_opd_serves_the_mirror_only_its_sources(scope: str, served: tuple[str, ...]) -> None:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="WARNING")
    try:
        mirror = _loaded(scope + '[plugins]\nenable = ["mirror"]\n' + RULES)
    finally:
        logger.remove(sink)
    assert mirror.error is None
    assert (mirror.config.namespaces, mirror.config.clusterwide) == (served, False)
    unserved = [ns for ns in ("apps", "team-x") if ns not in served]
    said = [line for line in lines if "does not serve" in line]
    assert said == ([f"opd: plugin 'mirror' needs namespaces that [plugins.mirror].namespaces (else "
                     f"[opd].namespaces) does not serve: {', '.join(unserved)}; its handlers see nothing there"]
                    if unserved else [])
