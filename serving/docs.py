"""The API's documentation pages, from copies of Swagger UI and ReDoc installed with vidmon
(the ``fastapi-offline`` package's files), so ``/docs`` works on a machine without internet.

These are ordinary routes, so request metrics name them (``route="/docs"``), where
FastAPI's built-in ones were counted as unmatched.
"""

from __future__ import annotations

from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from monitor.errors import NotFound

ASSETS_PATH = "/docs/assets"
_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")

router = APIRouter(include_in_schema=False)


def _root(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/")


@router.get("/openapi.json")
def openapi(request: Request) -> JSONResponse:
    """The OpenAPI document of the running app."""
    return JSONResponse(request.app.openapi())


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI over ``/openapi.json``."""
    root = _root(request)
    return get_swagger_ui_html(
        openapi_url=f"{root}/openapi.json", title=f"{request.app.title} – API",
        swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png")


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    """ReDoc over ``/openapi.json``."""
    root = _root(request)
    return get_redoc_html(
        openapi_url=f"{root}/openapi.json", title=f"{request.app.title} – API",
        redoc_js_url=f"{root}{ASSETS_PATH}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{ASSETS_PATH}/favicon.png", with_google_fonts=False)


@router.get(ASSETS_PATH + "/{name}")
def asset(name: Annotated[str, Path(max_length=64)]) -> FileResponse:
    """One of the documentation pages' files (a fixed list; nothing else is reachable)."""
    if name not in _FILES:
        raise NotFound(f"no documentation asset {name!r}")
    source = resources.files("fastapi_offline") / "static" / name
    return FileResponse(str(source), media_type=_TYPES[name[name.rindex("."):]],
                        headers={"Cache-Control": "public, max-age=86400"})
