"""Domain errors map to HTTP statuses in one place."""

from __future__ import annotations

import json

import pytest

from monitor.errors import (
    InvalidInput,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    UnsupportedMediaType,
    VidmonError,
)
from serving.http import _error_response


@pytest.mark.parametrize(("error", "status"), [
    (InvalidInput("bad clip"), 422), (UnsupportedMediaType("text"), 415),
    (PayloadTooLarge("big"), 413), (NotReady("loading"), 503), (VidmonError("other"), 400),
])
def test_each_domain_error_has_its_status_and_message(error: VidmonError, status: int) -> None:
    response = _error_response(error)
    assert response.status_code == status
    body = json.loads(response.body)
    assert body == {"error": type(error).__name__, "detail": str(error)}


def test_overload_tells_the_client_when_to_retry() -> None:
    response = _error_response(Overloaded("queue full", retry_after_s=2))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "2"
