"""What opd's own tests share: the KopfExample CRD, operators and plugins for tests, a venv builder,
a webhook server in a process of its own."""
