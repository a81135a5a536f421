"""The FastAPI application: state, routers, error translation. Models load in the lifespan."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import torch
from anyio import to_thread
from fastapi import FastAPI
from sqlalchemy.exc import DBAPIError

from engines.serving.deploy import ServingManager
from engines.serving.pool import EnginePool
from engines.serving.versions import ModelStore
from server import health, logs, metrics
from server.admin import bundles as admin_bundles
from server.admin import jobs as admin_jobs
from server.admin import models as admin_models
from server.admin.datasets import remove_partial_datasets
from server.admission import GateKeeper
from server.apidocs import install_docs
from server.errors import database_name, install_handlers
from server.jobs.lock import StateLock
from server.jobs.store import JobStore
from server.jobs.supervisor import Supervisor, SupervisorSettings
from server.logbuffer import LogBuffer
from server.metrics import Metrics
from server.middleware import RequestGuard
from server.protocols.aiaa import inference, models, polygon, session
from server.protocols.aiaa.openapi import ERROR_RESPONSE, install_openapi
from server.protocols.interactive import router as interactive
from server.protocols.nninteractive import routes as nninteractive
from server.sessions.store import SessionStore
from server.settings import Settings
from server.ui import install_ui

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, pool: EnginePool | None = None) -> FastAPI:
    """Build the app; ``pool`` (tests) replaces loading ``settings.config`` at start-up."""
    settings = settings or Settings()
    settings.admin_secret()  # refuse to start with a token file that others can read

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.logs.attach()
        to_thread.current_default_thread_limiter().total_tokens = settings.worker_thread_count()
        # Before anything touches the state folder (or loads models): a second server refuses here.
        app.state.state_lock = StateLock(settings.state_path()).acquire()
        if pool is None:
            torch.set_num_threads(settings.inference_thread_count())
            log.info("loading models from %s (%d inference threads)", settings.config, torch.get_num_threads())
            app.state.pool = await to_thread.run_sync(lambda: EnginePool.from_file(settings.config, settings.warmup))
        await to_thread.run_sync(_start_admin, app)
        # What start-up made (modules, weights, ~0.5 M objects) lives as long as the process: move it out
        # of the collector's reach. A full collection over it took 1.8 s on the loaded 2-core machine,
        # holding the GIL, so the event loop stood still too (the likely cause of /health/live outliers
        # over 1 s under load). Not for a pool given by a test: frozen garbage of earlier tests would stay.
        if pool is None:
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            await to_thread.run_sync(app.state.supervisor.stop)
            if pool is None:
                app.state.pool.close()
            app.state.state_lock.release()
            app.state.logs.detach()

    app = FastAPI(title="AIAA-compatible annotation server", version="0.1.0", lifespan=lifespan,
                  redirect_slashes=False, responses=ERROR_RESPONSE,
                  docs_url=None, redoc_url=None)  # served by install_docs, without CDNs
    app.state.settings = settings
    app.state.pool = pool or EnginePool()
    app.state.sessions = SessionStore(settings.session_default_expiry_s, settings.session_max_expiry_s,
                                      settings.session_memory_bytes, max_sessions=settings.max_sessions,
                                      overhead_bytes=settings.session_overhead_bytes)
    app.state.logs = LogBuffer(json_lines=settings.log_format == "json")
    app.state.gates = GateKeeper(settings.max_running_per_model, settings.max_queued_per_model)
    app.state.metrics = Metrics(app.state)
    install_handlers(app)
    install_ui(app)  # `/`, `/admin` and `/static/`: paths no JSON route uses
    install_docs(app)
    install_openapi(app)
    for module in (models, inference, polygon, session, interactive, nninteractive, health, logs, admin_jobs,
                   admin_models, admin_bundles):
        app.include_router(module.router)
    app.include_router(metrics.router)
    app.add_middleware(RequestGuard, state=app.state)
    return app


def _start_admin(app: FastAPI) -> None:
    """Model versions (first versions registered, serving versions loaded), the job table and its supervisor."""
    settings: Settings = app.state.settings
    state_dir = settings.state_path()
    state_dir.mkdir(parents=True, exist_ok=True)
    for name in remove_partial_datasets(state_dir / "datasets"):
        log.warning("removed %s: a dataset upload that a crash interrupted", name)
    app.state.serving = ServingManager(app.state.pool, ModelStore(settings.model_store_path()), settings.warmup)
    app.state.serving.sync_at_start()
    try:
        app.state.jobs = JobStore(settings.job_db_url())
    except DBAPIError as exc:
        raise RuntimeError(f"the job database {database_name(settings.job_db_url())} cannot be opened: {exc.orig}; "
                           f"repair it, move it away or set AIAA_DB_URL") from None
    app.state.supervisor = Supervisor(app.state.jobs, app.state.serving, SupervisorSettings(
        work_root=state_dir / "jobs", max_running=settings.jobs_max_running, threads=settings.job_threads,
        niceness=settings.job_niceness, stop_grace_s=settings.job_stop_grace_s,
        term_grace_s=settings.job_term_grace_s, heartbeat_timeout_s=settings.job_heartbeat_timeout_s,
        max_dice_drop=settings.job_max_dice_drop))
    app.state.supervisor.start()
