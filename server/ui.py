"""The browser viewer (``/``) and administration page (``/admin``): static files built from ``viewer/``.

The pages are clients of the public API; this module only serves their files. The assets are
committed under ``server/static/`` (rebuilt by ``make viewer``), so serving needs no Node and no
network. A strict Content-Security-Policy keeps the pages from loading anything from elsewhere.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

from server.errors import NotFound

__all__ = ["STATIC_DIR", "install_ui"]

STATIC_DIR = Path(__file__).resolve().parent / "static"

# Everything from this origin; blob: for the volumes NiiVue decodes and the masks the viewer saves.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
       "connect-src 'self' blob: data:; worker-src 'self' blob:; font-src 'self' data:; object-src 'none'; "
       "base-uri 'none'; frame-ancestors 'self'")
PAGE_HEADERS = {"Content-Security-Policy": CSP, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}

router = APIRouter(include_in_schema=False)


def _page(name: str) -> FileResponse:
    path = STATIC_DIR / name
    if not path.is_file():
        raise NotFound(f"the viewer's assets are missing ({path}); rebuild them with 'make viewer'")
    return FileResponse(path, media_type="text/html", headers=PAGE_HEADERS)


@router.get("/")
def viewer_page() -> FileResponse:
    """The viewer: open a volume (drag and drop, or ``/?session=<id>``), prompt, see and save the mask."""
    return _page("index.html")


@router.get("/admin")
def admin_page() -> FileResponse:
    """The administration page: jobs with live progress, logs, training curves, model versions."""
    return _page("admin.html")


class _Assets(StaticFiles):
    """Static files that browsers revalidate (the names do not change between builds)."""

    async def get_response(self, path, scope):
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def install_ui(app: FastAPI) -> None:
    """Add ``/``, ``/admin`` and the assets under ``/static/`` (no JSON route uses these paths)."""
    app.include_router(router)
    app.mount("/static", _Assets(directory=STATIC_DIR, check_dir=False), name="static")
