"""Exceptions: user-facing ones carry a one-line message naming what and where."""

from __future__ import annotations


class OpdError(Exception):
    """An error a user can cause or fix; the CLI prints its message as one line and exits non-zero."""


class ControlPlaneError(OpdError):
    """The local control plane cannot be found, built, started or reached."""


class ConfigError(OpdError):
    """A configuration (kubeconfig, TOML file, settings) is missing or malformed."""


class HandlerError(Exception):
    """Base of the exceptions a handler raises to steer its retries."""


class TemporaryError(HandlerError):
    """Retry the handler after ``delay`` seconds."""

    def __init__(self, message: str = "", delay: float | None = 60.0) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentError(HandlerError):
    """Do not retry the handler: its failure is final for this change."""


class HandlerTimeoutError(PermanentError):
    """The handler ran past its ``timeout``."""


class HandlerRetriesError(PermanentError):
    """The handler failed more than ``retries`` times."""


class AdmissionError(PermanentError):
    """Raised by an admission handler (``on.validate``, ``on.mutate``) to refuse the request:
    the API server answers its client with ``message`` and the HTTP status ``code``."""

    def __init__(self, message: str = "", code: int | None = 500) -> None:
        super().__init__(message)
        self.code = code


class WebhookError(Exception):
    """A webhook request opd cannot answer: not a review, or for nothing this operator serves
    (answered with HTTP 400, not as a refusal of the request under review)."""
