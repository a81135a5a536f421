"""Jobs API (admin): submit, list, follow, cancel and resume jobs; upload datasets.

``POST /admin/jobs`` -> 202 ``{"job_id"}``; ``GET /admin/jobs[/{id}]``; ``GET /admin/jobs/{id}/logs``;
``GET /admin/jobs/{id}/events`` (server-sent events); ``DELETE /admin/jobs/{id}`` cancels;
``POST /admin/jobs/{id}/resume``; ``POST /admin/datasets`` (multipart ``images`` and ``labels``).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import Any

from anyio import to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.datastructures import UploadFile

from engines.errors import ConfigError
from engines.serving.versions import check_model_name
from server.admin.auth import require_admin
from server.admin.datasets import resolve_datalist, save_dataset
from server.admin.validate import check_job_params
from server.deps import SettingsDep
from server.errors import BadRequest, Conflict, NotFound
from server.jobs.bundle_commands import bundle_folder, check_bundle_job
from server.jobs.commands import JOB_KINDS, check_params, job_kind
from server.jobs.store import ACTIVE, FINISHED, RESUMABLE, JobState
from server.protocols.aiaa.wire import read_form

router = APIRouter(tags=["admin: jobs"], dependencies=[Depends(require_admin)])


class JobRequest(BaseModel):
    """Body of ``POST /admin/jobs``."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(description=f"one of {', '.join(JOB_KINDS)}")
    model: str
    datalist: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        if kind not in JOB_KINDS:
            raise ValueError(f"unknown job kind {kind!r}: use one of {', '.join(JOB_KINDS)}")
        return kind


def _job(request: Request, job_id: str) -> dict:
    row = request.app.state.jobs.get(job_id)
    if row is None:
        raise NotFound(f"no job {job_id!r} (GET /admin/jobs lists them)")
    return row


@router.post("/admin/jobs", status_code=202)
def submit(body: JobRequest, request: Request, settings: SettingsDep) -> JSONResponse:
    """Queue a job; it runs in a worker process when a slot is free."""
    state = request.app.state
    try:
        check_model_name(body.model)
    except ConfigError as exc:
        raise BadRequest(str(exc)) from None
    check_job_params(body.params, settings)
    kind = job_kind(body.kind)
    datalist = None
    if kind.needs_datalist or body.datalist:
        if not body.datalist:
            raise BadRequest(f"a {body.kind} job needs a 'datalist' (a path inside the data roots or a dataset id)")
        datalist = str(resolve_datalist(body.datalist, settings.data_root_paths(), settings.state_path() / "datasets"))
    if bundle_folder(state.pool, body.model) is not None:  # a served MONAI bundle: its own job command lines
        params = {**body.params}
        try:
            check_bundle_job(body.kind, params)
            if "base_version" in params:  # an earlier stored version of the bundle to start from
                if state.serving.store.bundle_dir(body.model, str(params["base_version"])) is None:
                    raise BadRequest(f"version {params['base_version']} of '{body.model}' is not a bundle")
            else:
                params["base_version"] = state.serving.serving_config(body.model)[0]
        except ConfigError as exc:
            raise BadRequest(str(exc)) from None
        row = state.jobs.create(body.kind, body.model, datalist, params, str(settings.state_path() / "jobs"))
        state.supervisor.wake()
        return JSONResponse({"job_id": row["id"]}, status_code=202)
    version, config_path = state.serving.serving_config(body.model)
    params = {**body.params}
    if "base_version" in params:
        config_path = state.serving.store.config_path(body.model, str(params["base_version"]))
    else:
        params["base_version"] = version
    try:
        check_params(body.kind, params, config_path)
    except ConfigError as exc:  # the job's parameters are the request's, not the server's configuration
        raise BadRequest(str(exc)) from None
    row = state.jobs.create(body.kind, body.model, datalist, params, str(settings.state_path() / "jobs"))
    state.supervisor.wake()
    return JSONResponse({"job_id": row["id"]}, status_code=202)


@router.get("/admin/jobs")
def list_jobs(request: Request, state: str | None = None, limit: int = 100) -> JSONResponse:
    """Jobs, newest first (``?state=running``)."""
    states = tuple(state.split(",")) if state else None
    return JSONResponse([request.app.state.jobs.public(r) for r in request.app.state.jobs.list(states, limit)])


@router.get("/admin/jobs/{job_id}")
def get_job(job_id: str, request: Request) -> JSONResponse:
    """One job: state, progress, metrics, ETA, times, error, worker pid, result."""
    return JSONResponse(request.app.state.jobs.public(_job(request, job_id)))


@router.get("/admin/jobs/{job_id}/logs")
def job_logs(job_id: str, request: Request, lines: int = 100) -> PlainTextResponse:
    """The last ``lines`` lines of the job's log (its workers' output)."""
    row = _job(request, job_id)
    try:
        with open(row["log_path"], errors="replace") as fh:
            tail = deque(fh, maxlen=max(1, min(lines, 100_000)))
    except FileNotFoundError:
        tail = deque()
    return PlainTextResponse("".join(tail))


@router.get("/admin/jobs/{job_id}/events")
async def job_events(job_id: str, request: Request) -> StreamingResponse:
    """Server-sent events: a ``progress`` event at every change, then ``end`` once the job finished."""
    _job(request, job_id)
    jobs = request.app.state.jobs

    async def stream():
        last = None
        while True:
            row = await to_thread.run_sync(jobs.get, job_id)
            public = jobs.public(row)
            if row["updated_at"] != last:
                last = row["updated_at"]
                yield f"event: progress\ndata: {json.dumps(public)}\n\n"
            if row["state"] in FINISHED:
                yield f"event: end\ndata: {json.dumps(public)}\n\n"
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(0.5)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.delete("/admin/jobs/{job_id}", status_code=202)
def cancel(job_id: str, request: Request, remove: bool = False) -> JSONResponse:
    """Cancel: a clean stop at the next batch (with a checkpoint), then SIGTERM, then SIGKILL.

    ``?remove=true`` instead removes a job that is over (succeeded, failed, cancelled or interrupted)
    from the list; its folder stays on disk.
    """
    row = _job(request, job_id)
    if remove:
        if not request.app.state.jobs.delete(job_id, only_if_state=FINISHED):
            raise Conflict(f"job {job_id} is {row['state']}; cancel it first (only finished jobs are removed)")
        return JSONResponse({"job_id": job_id, "removed": True}, status_code=200)
    if row["state"] not in ACTIVE:
        raise Conflict(f"job {job_id} is {row['state']}; only queued or running jobs can be cancelled")
    request.app.state.jobs.update(job_id, cancel_requested=True)
    request.app.state.supervisor.wake()
    return JSONResponse(request.app.state.jobs.public(_job(request, job_id)), status_code=202)


@router.post("/admin/jobs/{job_id}/resume", status_code=202)
def resume(job_id: str, request: Request) -> JSONResponse:
    """Queue an interrupted, cancelled or failed training again; it continues from its last checkpoint."""
    row = _job(request, job_id)
    if not job_kind(row["kind"]).resumable:
        raise Conflict(f"job {job_id} is a {row['kind']} job; only training jobs resume (submit it again)")
    if row["state"] not in RESUMABLE:
        raise Conflict(f"job {job_id} is {row['state']}; only interrupted, cancelled or failed jobs resume")
    request.app.state.jobs.update(job_id, only_if_state=RESUMABLE, state=JobState.QUEUED,
                                  resume=True, cancel_requested=False, cancelled_by=None, error=None,
                                  finished_at=None, attempt=row["attempt"] + 1)
    request.app.state.supervisor.wake()
    return JSONResponse({"job_id": job_id, "attempt": row["attempt"] + 1}, status_code=202)


@router.post("/admin/datasets", status_code=201)
async def upload_dataset(request: Request, settings: SettingsDep) -> JSONResponse:
    """Store labelled cases (multipart ``images`` and ``labels`` parts, paired in order; optional
    ``validation`` count); the returned ``dataset_id`` is usable as a job's ``datalist``."""
    form = await read_form(request, settings.max_upload_bytes)
    images = [(f.filename, await f.read()) for f in form.getlist("images") if isinstance(f, UploadFile)]
    labels = [(f.filename, await f.read()) for f in form.getlist("labels") if isinstance(f, UploadFile)]
    validation = form.get("validation")
    try:
        count = int(validation) if isinstance(validation, str) and validation else None
    except ValueError:
        raise BadRequest("validation must be an integer") from None
    summary = await to_thread.run_sync(save_dataset, images, labels, settings.state_path() / "datasets", count)
    return JSONResponse(summary, status_code=201)
