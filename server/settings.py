"""Server settings (environment variables ``AIAA_*`` or constructor arguments)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["InsecureTokenFile", "ModelLimits", "Settings", "default_max_voxels"]


class InsecureTokenFile(ValueError):
    """The admin token file can be read by other users of the machine."""


class ModelLimits(BaseModel):
    """Per-model overrides of the upload limits (``AIAA_MODEL_LIMITS='{"name": {"max_voxels": ...}}'``)."""

    model_config = ConfigDict(extra="forbid")

    max_voxels: int | None = Field(None, ge=1, description="largest image this model accepts (voxels)")
    max_upload_bytes: int | None = Field(None, ge=1, description="largest request body for this model")


def default_max_voxels() -> int:
    """A voxel limit that fits the machine: a 64th of its memory (float copies in pre-processing), 8 M to 128 M."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = 8 * 1024**3
    return int(min(128 * 1024**2, max(8 * 1024**2, memory // 64)))


def read_token_file(path: Path) -> str:
    """The token in ``path``; refused when other users may read or write the file.

    Raises:
        InsecureTokenFile: the file's mode grants group or other users any access.
        OSError: the file cannot be read.
    """
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InsecureTokenFile(f"the admin token file {path} is accessible to other users "
                                f"(mode {stat.S_IMODE(mode):04o}): run 'chmod 600 {path}'")
    return path.read_text().strip()


class Settings(BaseSettings):
    """Limits and paths of one server process."""

    model_config = SettingsConfigDict(env_prefix="AIAA_", extra="forbid")

    config: str = Field("engine_pool.json", description="engine_pool.json to load")
    warmup: bool = Field(True, description="run each model once at start-up")
    max_upload_bytes: int = Field(1024 * 1024 * 1024, ge=1, description="largest request body accepted")
    max_voxels: int = Field(default_factory=default_max_voxels, ge=1,
                            description="largest image accepted (voxels); default: a 64th of the memory, 8-128 M")
    model_limits: dict[str, ModelLimits] = Field(default_factory=dict,
                                                 description="per-model max_voxels / max_upload_bytes (JSON)")
    session_default_expiry_s: int = Field(3600, ge=1, description="expiry when a client asks for 0")
    session_max_expiry_s: int = Field(24 * 3600, ge=1, description="upper bound of any session's expiry")
    session_memory_bytes: int = Field(4 * 1024**3, ge=1, description="memory all sessions may hold together")
    max_running_per_model: int = Field(2, ge=1, description="concurrent inferences per model")
    max_queued_per_model: int = Field(16, ge=0, description="waiting inferences per model before 503")
    max_sessions: int = Field(1000, ge=1, description="sessions kept at once (least recently used go first)")
    session_overhead_bytes: int = Field(16 * 1024, ge=0,
                                        description="memory each session costs beyond its voxels (measured: 2-4 KiB)")
    request_timeout_s: float = Field(300.0, gt=0, description="a request's work stops after this long (503)")
    body_idle_timeout_s: float = Field(30.0, gt=0, description="a request body that sends nothing this long: 408")
    body_timeout_s: float = Field(600.0, gt=0, description="a request body not complete after this long: 408")
    header_timeout_s: float = Field(15.0, gt=0, description="a connection must send its request headers within this")
    keepalive_timeout_s: int = Field(30, ge=1, description="idle keep-alive connections close after this")
    max_connections: int = Field(512, ge=1, description="open connections and requests at once; more get 503")
    log_format: Literal["text", "json"] = Field("text", description="log lines as text or one JSON object each")
    admin_max_failures: int = Field(60, ge=1, description="failed admin logins per client within the window: then 429")
    admin_failure_window_s: float = Field(60.0, gt=0, description="window of the failed admin login limit")

    # administration: jobs, model versions, datasets
    admin_token: SecretStr | None = Field(None, description="bearer token of the /admin/ routes (unset: disabled)")
    admin_token_file: str | None = Field(None, description="file holding the admin token (aiaa serve --admin-token-file)")
    state_dir: str = Field("runs", description="job folders, uploaded datasets and the default job database")
    db_url: str | None = Field(None, description="job database URL (default: SQLite in state_dir)")
    model_store: str | None = Field(None, description="model versions folder (default: state_dir/model_store)")
    data_roots: str = Field("", description="colon-separated folders that datalists and their files must lie in")
    jobs_max_running: int = Field(1, ge=1, description="jobs that run at once; the rest queue")
    job_threads: int = Field(1, ge=1, description="CPU threads of each job's worker")
    job_niceness: int = Field(10, ge=0, le=19, description="scheduling priority offset of job workers")
    job_stop_grace_s: float = Field(30.0, gt=0, description="cancel: wait this long for a clean stop, then SIGTERM")
    job_term_grace_s: float = Field(10.0, gt=0, description="cancel: wait this long after SIGTERM, then SIGKILL")
    job_heartbeat_timeout_s: float = Field(600.0, ge=0, description="end a job worker silent this long (0: never)")
    job_max_dice_drop: float = Field(0.0, ge=0, le=1, description="a training deploys only if its validation Dice "
                                                                  "is at most this below the serving version's")
    inference_threads: int = Field(0, ge=0, description="CPU threads of inference; 0: the cores jobs leave free")
    worker_threads: int = Field(0, ge=0, description="threads that decode uploads, encode replies and run sync "
                                                     "routes (model calls have their own); 0: 2 per core, at least 4")

    def inference_thread_count(self) -> int:
        """Threads for inference: the setting, or the cores left when the most jobs run (at least one).

        More threads than free cores makes every click wait for descheduled threads: on 2 cores with
        a one-thread job running, two inference threads made a click 5-8x slower than one.
        """
        if self.inference_threads:
            return self.inference_threads
        return max(1, (os.cpu_count() or 1) - self.jobs_max_running * self.job_threads)

    def worker_thread_count(self) -> int:
        """Threads for blocking work besides model calls: the setting, or 2 per core (at least 4).

        Every such thread competes with the event loop for the GIL: 40 of them (anyio's default)
        decoding 32 uploads at once delay even ``/health/live``.
        """
        return self.worker_threads or max(4, 2 * (os.cpu_count() or 1))

    def admin_secret(self) -> str | None:
        """The admin token, from the setting or the token file; None when the admin API is disabled."""
        if self.admin_token is not None and self.admin_token.get_secret_value():
            return self.admin_token.get_secret_value()
        if self.admin_token_file:
            token = read_token_file(Path(self.admin_token_file))
            return token or None
        return None

    def voxel_limit(self, model: str | None = None) -> int:
        """The voxel limit of uploads for ``model`` (its override, else the server's)."""
        limits = self.model_limits.get(model or "")
        return limits.max_voxels if limits and limits.max_voxels else self.max_voxels

    def upload_limit(self, model: str | None = None) -> int:
        """The request body limit for ``model`` (its override, else the server's)."""
        limits = self.model_limits.get(model or "")
        return limits.max_upload_bytes if limits and limits.max_upload_bytes else self.max_upload_bytes

    def uvicorn_options(self) -> dict:
        """Connection limits and timeouts for ``uvicorn.run`` (slow or idle clients are dropped)."""
        from server.transport import protocol_with_header_timeout

        return {"limit_concurrency": self.max_connections, "timeout_keep_alive": self.keepalive_timeout_s,
                "h11_max_incomplete_event_size": 64 * 1024,
                "http": protocol_with_header_timeout(self.header_timeout_s)}

    def state_path(self) -> Path:
        """The resolved state folder."""
        return Path(self.state_dir).resolve()

    def job_db_url(self) -> str:
        """The job database URL."""
        return self.db_url or f"sqlite:///{self.state_path() / 'jobs.sqlite'}"

    def model_store_path(self) -> Path:
        """The model versions folder."""
        return Path(self.model_store).resolve() if self.model_store else self.state_path() / "model_store"

    def data_root_paths(self) -> list[Path]:
        """Resolved data roots; uploaded datasets (state_dir/datasets) are always one."""
        roots = [Path(p).resolve() for p in self.data_roots.split(":") if p.strip()]
        return roots + [self.state_path() / "datasets"]
