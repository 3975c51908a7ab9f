"""Domain errors raised by the core; the API maps them to HTTP statuses in one place."""

from __future__ import annotations


class VidmonError(Exception):
    """Base of vidmon's domain errors."""


class InvalidInput(VidmonError):
    """The request's content cannot be used (HTTP 422)."""


class UnsupportedMediaType(VidmonError):
    """The upload is not a type vidmon accepts (HTTP 415)."""


class PayloadTooLarge(VidmonError):
    """The upload is over the configured size limit (HTTP 413)."""


class Unavailable(VidmonError):
    """Try again later: the answer carries ``Retry-After``."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Overloaded(Unavailable):
    """The service cannot take more work now (HTTP 503 with Retry-After)."""


class NotReady(Unavailable):
    """The model or the store is not ready yet (HTTP 503 with Retry-After)."""

    def __init__(self, message: str, retry_after_s: int = 5) -> None:
        super().__init__(message, retry_after_s)


class StoreUnavailable(NotReady):
    """The store did not answer (HTTP 503 with Retry-After)."""


class DeadlineExceeded(Unavailable):
    """The request waited past its deadline for the model (HTTP 504 with Retry-After)."""


class NotFound(VidmonError):
    """No such resource (HTTP 404)."""


class NoModel(NotFound):
    """No registered model (or no version behind the alias) to serve, monitor or retrain."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what}: run `vidmon train` to train one (on your videos with --data, or on a "
            "synthetic set), or `vidmon register MODEL_FILE --card CARD --reference-data "
            "DATA` for a model of your own")


class SetupError(VidmonError):
    """Something outside vidmon must change before a command can run (a port taken, a
    server that does not answer): the CLI says so in one line and exits 2."""


class Conflict(VidmonError):
    """The request is valid but the current state does not allow it (HTTP 409)."""


class Unauthorized(VidmonError):
    """No or malformed credentials (HTTP 401)."""


class Forbidden(VidmonError):
    """Credentials refused, or the operation is switched off (HTTP 403)."""
