"""A stand-in for the admin API of the jobs issue (issue 16), exactly its routes, for client tests.

Jobs advance one step each time they are read (``GET /admin/jobs/{id}``) or streamed, so tests
are deterministic: queued -> running epoch 1..3 -> succeeded with a new version.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

TOKEN = "s3cret"
KINDS = ("train", "finetune", "evaluate", "export")
EPOCHS = 3


def _error(status: int, kind: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": kind, "detail": detail}, status_code=status)


@dataclass
class FakeJob:
    """One job's record and its scripted progress."""

    id: str
    kind: str
    model: str
    params: dict[str, Any]
    step: int = 0  # 0 queued, 1..EPOCHS running, EPOCHS+1 succeeded
    state: str = "queued"

    def advance(self) -> None:
        if self.state not in ("queued", "running"):
            return
        self.step += 1
        self.state = "running" if self.step <= EPOCHS else "succeeded"

    def record(self) -> dict[str, Any]:
        epoch = min(self.step, EPOCHS)
        done = self.state == "succeeded"
        return {
            "id": self.id, "kind": self.kind, "model": self.model, "state": self.state,
            "progress": 1.0 if done else round(max(0, self.step - 1) / EPOCHS, 3),
            "epoch": epoch, "epochs": EPOCHS,
            "metrics": {"loss": round(1.0 / (1 + epoch), 3), "dice": 0.8 + epoch / 100},
            "eta_s": None if done else float((EPOCHS - epoch) * 10), "created_at": "2026-11-24T02:00:00Z",
            "started_at": None if self.step == 0 else "2026-11-24T02:00:01Z",
            "finished_at": "2026-11-24T02:00:09Z" if done or self.state == "cancelled" else None,
            "error": None, "pid": 4242 if self.state == "running" else None,
            "result": {"version": "3"} if done else None,
        }


@dataclass
class FakeAdmin:
    """The server's admin state."""

    jobs: dict[str, FakeJob] = field(default_factory=dict)
    events: bool = True  # False: the server offers no event stream (clients must poll)
    versions: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {
        "annotation_test": [{"version": "1", "metrics": {"dice": 0.85}}, {"version": "2", "metrics": {"dice": 0.88}}]})
    serving: dict[str, str] = field(default_factory=lambda: {"annotation_test": "2"})
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasets: dict[str, dict[str, int]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)


def create_fake_admin(state: FakeAdmin | None = None) -> Starlette:
    """The ASGI app; ``app.state.admin`` is its :class:`FakeAdmin`."""
    admin = state or FakeAdmin()

    def authorized(request: Request) -> Response | None:
        admin.requests.append((request.method, request.url.path))
        header = request.headers.get("authorization", "")
        if not header:
            return _error(401, "Unauthorized", "admin routes need 'Authorization: Bearer <token>'")
        if header != f"Bearer {TOKEN}":
            return _error(403, "Forbidden", "wrong admin token")
        return None

    def find(request: Request) -> FakeJob | Response:
        job = admin.jobs.get(request.path_params["job_id"])
        if job is None:
            return _error(404, "JobNotFound", f"job '{request.path_params['job_id']}' not found")
        return job

    async def submit(request: Request) -> Response:
        if refused := authorized(request):
            return refused
        body = await request.json()
        if body.get("kind") not in KINDS or not body.get("model") or not body.get("datalist"):
            return _error(400, "BadRequest", "kind, model and datalist are required")
        job = FakeJob(uuid.uuid4().hex, body["kind"], body["model"], body.get("params") or {})
        admin.jobs[job.id] = job
        return JSONResponse({"job_id": job.id}, status_code=202)

    async def list_jobs(request: Request) -> Response:
        return authorized(request) or JSONResponse([j.record() for j in admin.jobs.values()])

    async def show(request: Request) -> Response:
        if refused := authorized(request):
            return refused
        job = find(request)
        if isinstance(job, Response):
            return job
        record = job.record()
        job.advance()
        return JSONResponse(record)

    async def logs(request: Request) -> Response:
        if refused := authorized(request):
            return refused
        job = find(request)
        if isinstance(job, Response):
            return job
        lines = [f"epoch {e}/{EPOCHS} loss {1.0 / (1 + e):.3f}" for e in range(1, min(job.step, EPOCHS) + 1)]
        wanted = int(request.query_params.get("lines", 100))
        return PlainTextResponse("\n".join(["job started", *lines][-wanted:]) + "\n")

    async def events(request: Request) -> Response:
        if refused := authorized(request):
            return refused
        if not admin.events:
            return _error(404, "NotFound", "no event stream")
        job = find(request)
        if isinstance(job, Response):
            return job

        async def stream():
            yield ": keep-alive\n\n"
            while True:
                record = job.record()
                kind = "state" if record["state"] != "running" else "progress"
                yield f"event: {kind}\nid: {job.step}\ndata: {json.dumps(record)}\n\n"
                if record["state"] not in ("queued", "running"):
                    return
                job.advance()

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def cancel(request: Request) -> Response:
        if refused := authorized(request):
            return refused
        job = find(request)
        if isinstance(job, Response):
            return job
        if job.state in ("queued", "running"):
            job.state = "cancelled"
        return JSONResponse(job.record())

    async def resume(request: Request) -> Response:
        if refused := authorized(request):
            return refused
        job = find(request)
        if isinstance(job, Response):
            return job
        if job.state not in ("cancelled", "interrupted"):
            return _error(409, "Conflict", f"job is {job.state}; only cancelled or interrupted jobs resume")
        job.state = "queued"
        return JSONResponse(job.record(), status_code=202)

    async def versions(request: Request) -> Response:
        if refused := authorized(request):
            return refused
        name = request.path_params["name"]
        if name not in admin.versions:
            return _error(404, "ModelNotFoundError", f"model '{name}' not found")
        return JSONResponse([{**v, "serving": v["version"] == admin.serving[name]} for v in admin.versions[name]])

    async def serving(request: Request) -> Response:
        if refused := authorized(request):
            return refused
        name, version = request.path_params["name"], (await request.json()).get("version")
        if not isinstance(version, str):
            return _error(400, "BadRequest", "'version' must be a string such as \"2\"")
        if version not in {v["version"] for v in admin.versions.get(name, [])}:
            return _error(404, "VersionNotFound", f"model '{name}' has no version {version}")
        admin.serving[name] = version
        return JSONResponse({"model": name, "serving": version})

    async def model(request: Request) -> Response:
        if refused := authorized(request):
            return refused
        name = request.path_params["name"]
        if request.method == "PUT":
            form = await request.form()
            config, data = form.get("config"), form.get("data")
            if config is None or data is None or isinstance(config, str) or isinstance(data, str):
                return _error(400, "BadRequest", "multipart 'config' and 'data' files are required")
            parsed = json.loads(await config.read())
            weights = await data.read()
            version = str(len(admin.versions.get(name, [])) + 1)
            admin.versions.setdefault(name, []).append({"version": version, "metrics": {}})
            admin.serving[name] = version
            admin.models[name] = {"name": name, "config": parsed, "weights_bytes": len(weights), "version": version}
            return JSONResponse(admin.models[name])
        if name not in admin.models:
            return _error(404, "ModelNotFoundError", f"model '{name}' not found")
        if request.method == "DELETE":
            del admin.models[name]
            return JSONResponse({"name": name, "deleted": True})
        return JSONResponse(admin.models[name])

    async def datasets(request: Request) -> Response:
        if refused := authorized(request):
            return refused
        form = await request.form()
        images, labels = form.getlist("images"), form.getlist("labels")
        if not images or len(images) != len(labels):
            return _error(400, "BadRequest", "send as many 'labels' as 'images' files")
        dataset_id = uuid.uuid4().hex[:12]
        admin.datasets[dataset_id] = {"images": len(images), "labels": len(labels)}
        return JSONResponse({"dataset_id": dataset_id, "cases": len(images)}, status_code=201)

    app = Starlette(routes=[
        Route("/admin/jobs", submit, methods=["POST"]),
        Route("/admin/jobs", list_jobs, methods=["GET"]),
        Route("/admin/jobs/{job_id}", show, methods=["GET"]),
        Route("/admin/jobs/{job_id}", cancel, methods=["DELETE"]),
        Route("/admin/jobs/{job_id}/logs", logs, methods=["GET"]),
        Route("/admin/jobs/{job_id}/events", events, methods=["GET"]),
        Route("/admin/jobs/{job_id}/resume", resume, methods=["POST"]),
        Route("/admin/models/{name}/versions", versions, methods=["GET"]),
        Route("/admin/models/{name}/serving", serving, methods=["PUT"]),
        Route("/admin/model/{name}", model, methods=["GET", "PUT", "DELETE"]),
        Route("/admin/datasets", datasets, methods=["POST"]),
    ])
    app.state.admin = admin
    return app
