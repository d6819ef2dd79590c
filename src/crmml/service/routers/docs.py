"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), served with their own assets: no CDN, so they work offline.

FastAPI's own pages load Swagger UI and ReDoc from a CDN (and fonts from Google), which leaves
them blank without internet. Here the pages are FastAPI's (:func:`fastapi.openapi.docs.get_swagger_ui_html`,
:func:`~fastapi.openapi.docs.get_redoc_html`) pointed at the JavaScript, CSS and icon that the
``fastapi-offline`` package ships (Swagger UI 5, which reads the OpenAPI 3.1 schema FastAPI writes,
and ReDoc), mounted at :data:`ASSETS_PATH`. The app factory installs them only when the schema is
open (no API key), as it did FastAPI's pages.
"""

from __future__ import annotations

from importlib import resources

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["ASSETS_PATH", "assets_folder", "install_docs"]

#: Where the pages' assets are served.
ASSETS_PATH = "/docs-assets"


def assets_folder() -> str:
    """The folder of Swagger UI's and ReDoc's assets in the installed ``fastapi-offline`` package."""
    return str(resources.files("fastapi_offline") / "static")


def install_docs(app: FastAPI, *, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Add the two pages and their assets to ``app`` (whose ``openapi_url`` is set)."""
    openapi_url = app.openapi_url
    if openapi_url is None:
        raise ValueError("the docs pages need the OpenAPI schema (app.openapi_url is None)")
    app.mount(ASSETS_PATH, StaticFiles(directory=assets_folder()), name="docs-assets")

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(openapi_url=f"{root}{openapi_url}", title=f"{app.title} - Swagger UI",
                                   swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
                                   swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
                                   swagger_ui_parameters=app.swagger_ui_parameters)

    @app.get(redoc_url, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(openapi_url=f"{root}{openapi_url}", title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{root}{ASSETS_PATH}/redoc.standalone.js",
                              redoc_favicon_url=f"{root}{ASSETS_PATH}/favicon.png", with_google_fonts=False)
