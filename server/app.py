"""The FastAPI application: state, routers, error translation. Models load in the lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import FastAPI

from engines.pool import EnginePool
from server.errors import install_handlers
from server.logbuffer import LogBuffer
from server.openapi import ERROR_RESPONSE, install_openapi
from server.routers import health, inference, logs, models, session
from server.runner import GateKeeper
from server.sessions import SessionStore
from server.settings import Settings

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, pool: EnginePool | None = None) -> FastAPI:
    """Build the app; ``pool`` (tests) replaces loading ``settings.config`` at start-up."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.logs.attach()
        if pool is None:
            log.info("loading models from %s", settings.config)
            app.state.pool = await to_thread.run_sync(lambda: EnginePool.from_file(settings.config, settings.warmup))
        try:
            yield
        finally:
            if pool is None:
                app.state.pool.close()
            app.state.logs.detach()

    app = FastAPI(title="AIAA-compatible annotation server", version="0.1.0", lifespan=lifespan,
                  redirect_slashes=False, responses=ERROR_RESPONSE)
    app.state.settings = settings
    app.state.pool = pool or EnginePool()
    app.state.sessions = SessionStore(settings.session_default_expiry_s, settings.session_max_expiry_s,
                                      settings.session_memory_bytes)
    app.state.logs = LogBuffer()
    app.state.gates = GateKeeper(settings.max_running_per_model, settings.max_queued_per_model)
    install_handlers(app)
    install_openapi(app)
    for module in (models, inference, session, health, logs):
        app.include_router(module.router)
    return app
