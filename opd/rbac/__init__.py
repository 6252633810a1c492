"""Running opd in a cluster: least-privilege RBAC derived from the enabled plugins, and manifests.

- ``policy``: grants (one verb on one resource in one place), a plugin's ``opd_rbac`` rules checked,
  merged into PolicyRules;
- ``derive``: what the plugins' handlers, their own rules and ``[ha]`` need;
- ``objects``: the ServiceAccount, ClusterRole, Roles and bindings;
- ``podconfig`` and ``deployment``: the config file as a pod runs it, its ConfigMap and Deployment;
- ``yamltext``: YAML with comments; ``generate``: ``opd rbac`` and ``opd manifests``.
"""
