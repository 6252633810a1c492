"""opd's fixtures (control_plane, kubeconfig, api, namespace: a real local kube-apiserver), opted in."""

pytest_plugins = ["opd.testing.fixtures"]
