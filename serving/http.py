"""The HTTP edge in one place: domain errors to statuses, one error body for every failure,
request body limits enforced while reading, and the documented error responses.

Every error the service sends is ``{"error": <kind>, "detail": <message>}``: domain errors,
validation errors (summarised, never echoing the input back), body limits, unknown routes
and internal errors (logged with their traceback, answered without it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from monitor.errors import (
    Conflict,
    DeadlineExceeded,
    Forbidden,
    InvalidInput,
    NotFound,
    NotReady,
    Overloaded,
    PayloadTooLarge,
    StoreUnavailable,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    VidmonError,
)

log = logging.getLogger(__name__)

STATUS: dict[type[VidmonError], int] = {
    InvalidInput: 422,
    UnsupportedMediaType: 415,
    PayloadTooLarge: 413,
    NotFound: 404,
    Unauthorized: 401,
    Forbidden: 403,
    Conflict: 409,
    DeadlineExceeded: 504,
    Overloaded: 503,
    NotReady: 503,
}
_KIND = {400: "BadRequest", 404: "NotFound", 405: "MethodNotAllowed", 413: "PayloadTooLarge",
         422: "InvalidInput"}
MAX_DETAIL = 1000


def error_body(kind: str, detail: str, status: int, headers: dict[str, str] | None = None
               ) -> JSONResponse:
    """An error answer, its message cut to a bounded length."""
    if len(detail) > MAX_DETAIL:
        detail = detail[:MAX_DETAIL] + "..."
    return JSONResponse({"error": kind, "detail": detail}, status, headers=headers)


def _error_response(exc: VidmonError) -> JSONResponse:
    status = next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 400)
    headers = None
    if isinstance(exc, Unavailable):
        headers = {"Retry-After": str(exc.retry_after_s)}
    elif isinstance(exc, Unauthorized):
        headers = {"WWW-Authenticate": "Bearer"}
    elif isinstance(exc, PayloadTooLarge):
        # The rest of an over-long body may still be coming (a chunked upload has no
        # Content-Length to refuse it by): closing is the only way not to read it all.
        headers = {"Connection": "close"}
    return error_body(type(exc).__name__, str(exc), status, headers)


def _validation_summary(exc: RequestValidationError) -> str:
    """Where and what, for the first few errors; the offending input is not repeated."""
    errors = exc.errors()
    parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
             for e in errors[:5]]
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every failure the one error body."""

    @app.exception_handler(VidmonError)
    async def _domain(_: Request, exc: VidmonError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_body("InvalidInput", _validation_summary(exc), 422)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        kind = _KIND.get(exc.status_code, "HTTPError")
        return error_body(kind, str(exc.detail), exc.status_code, dict(exc.headers or {}))

    @app.exception_handler(SQLAlchemyError)
    async def _store(_: Request, exc: SQLAlchemyError) -> JSONResponse:
        log.warning("store error answering a request: %s", type(exc).__name__)
        return _error_response(StoreUnavailable("the store is unavailable; retry shortly"))


def internal_error(exc: BaseException) -> JSONResponse:
    """The answer to a bug: logged with its traceback, answered without it."""
    log.error("internal error", exc_info=exc)
    return error_body("InternalError", "internal error; the server log has the details", 500)


class BodyLimit:
    """Refuse request bodies over a limit: at once from ``Content-Length``, or as soon as the
    streamed bytes pass it, so nothing over the limit is buffered or written to disk."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        message = f"the request body is over the limit of {limit} bytes for {scope['path']}"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await error_body("BadRequest", "Content-Length is not a number", 400)(
                    scope, receive, send)
                return
            if int(declared) > limit:
                await error_body("PayloadTooLarge", message, 413,
                                 {"Connection": "close"})(scope, receive, send)
                return
        received = 0

        async def limited() -> Message:
            nonlocal received
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > limit:
                    # An HTTPException passes through FastAPI's body parsing unchanged.
                    raise HTTPException(413, message, headers={"Connection": "close"})
            return event

        await self.app(scope, limited, send)


class Observe:
    """Time every request and count it by route template (not the raw path: unknown paths
    must not grow the label set) and status. An exception that escapes the app (a bug) is
    answered 500 here, so the connection stays usable. Plain ASGI: Starlette's
    ``BaseHTTPMiddleware`` runs each request through a task group and memory streams, which
    cost measurable CPU per prediction."""

    def __init__(self, app: ASGIApp,
                 observe: Callable[[str, int, float], None]) -> None:
        self.app = app
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status, answered = time.perf_counter(), 500, False

        async def observed(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status, answered = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive, observed)
        except Exception as exc:
            if answered:
                raise
            response = internal_error(exc)
            status = response.status_code
            await response(scope, receive, send)
        route = getattr(scope.get("route"), "path", "unmatched")
        self.observe(route, status, time.perf_counter() - started)
