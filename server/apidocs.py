"""The API documentation pages, ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), with every asset served locally.

FastAPI's own pages load their scripts, styles, favicon and fonts from CDNs, so offline they are blank.
These are the same pages pointed at the pinned bundles that ``make viewer`` copies into
``server/static/docs/``. The Content-Security-Policy lets them reach this origin only; it allows inline
scripts because FastAPI's page starts Swagger UI with one.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

from server.errors import NotFound
from server.ui import STATIC_DIR

__all__ = ["DOCS_ASSETS", "install_docs"]

DOCS_ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon-32x32.png")
CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; connect-src 'self'; worker-src 'self' blob:; font-src 'self' data:; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'self'")
# validatorUrl: Swagger UI would otherwise send the document to validator.swagger.io.
# persistAuthorization: the admin token typed into "Authorize" survives a reload of the page.
SWAGGER_PARAMETERS = {"validatorUrl": None, "persistAuthorization": True}

router = APIRouter(include_in_schema=False)


def _asset(name: str) -> str:
    if not (STATIC_DIR / "docs" / name).is_file():
        raise NotFound(f"the API documentation's assets are missing ({STATIC_DIR / 'docs'}); "
                       "rebuild them with 'make viewer'")
    return f"/static/docs/{name}"


def _page(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CSP
    page.headers["Cache-Control"] = "no-cache"
    return page


@router.get("/docs")
def swagger_page(request: Request) -> HTMLResponse:
    """Swagger UI: try every route; "Authorize" takes the admin token for the admin routes."""
    app = request.app
    return _page(get_swagger_ui_html(
        openapi_url=app.openapi_url, title=f"{app.title}: API", swagger_js_url=_asset("swagger-ui-bundle.js"),
        swagger_css_url=_asset("swagger-ui.css"), swagger_favicon_url=_asset("favicon-32x32.png"),
        swagger_ui_parameters=SWAGGER_PARAMETERS))


@router.get("/redoc")
def redoc_page(request: Request) -> HTMLResponse:
    """ReDoc: the API reference as one page."""
    app = request.app
    return _page(get_redoc_html(
        openapi_url=app.openapi_url, title=f"{app.title}: API reference", redoc_js_url=_asset("redoc.standalone.js"),
        redoc_favicon_url=_asset("favicon-32x32.png"), with_google_fonts=False))


def install_docs(app: FastAPI) -> None:
    """Add ``/docs`` and ``/redoc``; the app must be made with ``docs_url=None, redoc_url=None``."""
    app.include_router(router)
