"""The job table, the source of truth about every job (SQLAlchemy Core).

SQLite in WAL mode by default; any SQLAlchemy database URL (``AIAA_DB_URL``, e.g.
``postgresql+psycopg://...``) otherwise. Times are UNIX seconds in the table and ISO 8601
strings in the API.
"""

from __future__ import annotations

import secrets
import threading
import time
from datetime import datetime, timezone
from enum import Enum
from typing import Any

import sqlalchemy as sa

__all__ = ["ACTIVE", "FINISHED", "RESUMABLE", "STATES", "JobState", "JobStore"]


class JobState(str, Enum):
    """The states of a job; stored and shown as their value."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    def __str__(self) -> str:
        return self.value


STATES = tuple(JobState)
ACTIVE = (JobState.QUEUED, JobState.RUNNING)
FINISHED = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.INTERRUPTED)
RESUMABLE = (JobState.INTERRUPTED, JobState.CANCELLED, JobState.FAILED)


def _values(states: tuple[JobState | str, ...]) -> list[str]:
    return [JobState(s).value for s in states]

_meta = sa.MetaData()
jobs = sa.Table(
    "jobs", _meta,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("model", sa.String(128), nullable=False),
    sa.Column("datalist", sa.Text),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("progress", sa.JSON, nullable=False),  # progress 0..1, epoch, epochs, metrics, eta_s, step, steps
    sa.Column("heartbeat", sa.Float),
    sa.Column("pid", sa.Integer),
    sa.Column("pgid", sa.Integer),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("cancelled_by", sa.String(16)),  # stop (cooperative), SIGTERM, SIGKILL, queue
    sa.Column("resume", sa.Boolean, nullable=False, default=False),
    sa.Column("work_dir", sa.Text),
    sa.Column("log_path", sa.Text),
    sa.Column("attempt", sa.Integer, nullable=False, default=1),
    sa.Column("result", sa.JSON),
    sa.Column("error", sa.Text),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("updated_at", sa.Float, nullable=False),
)


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat() if ts is not None else None


class JobStore:
    """Create, read and update job rows."""

    def __init__(self, url: str) -> None:
        self.url = url
        sqlite = url.startswith("sqlite")
        self.engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30} if sqlite else {})
        if sqlite:
            @sa.event.listens_for(self.engine, "connect")
            def _wal(dbapi_connection, _record) -> None:
                dbapi_connection.execute("PRAGMA journal_mode=WAL")
                dbapi_connection.execute("PRAGMA synchronous=NORMAL")
        _meta.create_all(self.engine)
        self._lock = threading.Lock()

    def create(self, kind: str, model: str, datalist: str | None, params: dict[str, Any], work_root: str) -> dict:
        """Insert a queued job; its work folder is ``<work_root>/<id>``."""
        job_id = f"{time.strftime('%Y%m%d')}-{secrets.token_hex(4)}"
        now = time.time()
        row = {"id": job_id, "kind": kind, "model": model, "datalist": datalist, "state": JobState.QUEUED.value,
               "params": params, "progress": {"progress": 0.0}, "cancel_requested": False, "resume": False,
               "work_dir": f"{work_root}/{job_id}", "log_path": f"{work_root}/{job_id}/job.log", "attempt": 1,
               "created_at": now, "updated_at": now}
        with self.engine.begin() as conn:
            conn.execute(jobs.insert().values(**row))
        return self.get(job_id)

    def get(self, job_id: str) -> dict | None:
        """One job row as a dict, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(jobs.select().where(jobs.c.id == job_id)).mappings().first()
        return dict(row) if row else None

    def list(self, states: tuple[str, ...] | None = None, limit: int = 200) -> list[dict]:
        """Jobs, newest first (optionally only some states)."""
        query = jobs.select().order_by(jobs.c.created_at.desc()).limit(limit)
        if states:
            query = query.where(jobs.c.state.in_(_values(states)))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def update(self, job_id: str, only_if_state: tuple[str, ...] | None = None, **fields: Any) -> bool:
        """Set fields (and ``updated_at``); with ``only_if_state``, only while the job is in one of them."""
        query = jobs.update().where(jobs.c.id == job_id)
        if only_if_state:
            query = query.where(jobs.c.state.in_(_values(only_if_state)))
        if "state" in fields:
            fields["state"] = JobState(fields["state"]).value
        with self.engine.begin() as conn:
            return conn.execute(query.values(**fields, updated_at=time.time())).rowcount > 0

    def delete(self, job_id: str, only_if_state: tuple[str, ...]) -> bool:
        """Remove a job's row while it is in one of ``only_if_state``; False when it is not."""
        query = jobs.delete().where(jobs.c.id == job_id).where(jobs.c.state.in_(_values(only_if_state)))
        with self.engine.begin() as conn:
            return conn.execute(query).rowcount > 0

    @staticmethod
    def public(row: dict) -> dict[str, Any]:
        """The API view of a job row (``GET /admin/jobs/{id}``)."""
        progress = row["progress"] or {}
        running = row["state"] == JobState.RUNNING
        return {
            "id": row["id"], "kind": row["kind"], "model": row["model"], "datalist": row["datalist"],
            "state": row["state"], "progress": progress.get("progress", 0.0),
            "epoch": progress.get("epoch"), "epochs": progress.get("epochs"),
            "metrics": progress.get("metrics", {}), "eta_s": progress.get("eta_s") if running else None,
            "step": progress.get("step"), "steps": progress.get("steps"),
            "created_at": _iso(row["created_at"]), "started_at": _iso(row["started_at"]),
            "finished_at": _iso(row["finished_at"]), "updated_at": _iso(row["updated_at"]),
            "heartbeat_at": _iso(row["heartbeat"]), "error": row["error"],
            "pid": row["pid"] if running else None, "attempt": row["attempt"],
            "cancel_requested": bool(row["cancel_requested"]), "cancelled_by": row["cancelled_by"],
            "params": row["params"], "result": row["result"],
        }
