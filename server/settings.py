"""Server settings (environment variables ``AIAA_*`` or constructor arguments)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Limits and paths of one server process."""

    model_config = SettingsConfigDict(env_prefix="AIAA_", extra="forbid")

    config: str = Field("engine_pool.json", description="engine_pool.json to load")
    warmup: bool = Field(True, description="run each model once at start-up")
    max_upload_bytes: int = Field(1024 * 1024 * 1024, ge=1, description="largest request body accepted")
    max_voxels: int = Field(512 * 512 * 1024, ge=1, description="largest image accepted (voxels)")
    session_default_expiry_s: int = Field(3600, ge=1, description="expiry when a client asks for 0")
    session_max_expiry_s: int = Field(24 * 3600, ge=1, description="upper bound of any session's expiry")
    session_memory_bytes: int = Field(4 * 1024**3, ge=1, description="memory all sessions may hold together")
    max_running_per_model: int = Field(2, ge=1, description="concurrent inferences per model")
    max_queued_per_model: int = Field(16, ge=0, description="waiting inferences per model before 503")

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

    def inference_thread_count(self) -> int:
        """Threads for inference: the setting, or the cores left when the most jobs run (at least one).

        More threads than free cores makes every click wait for descheduled threads: on 2 cores with
        a one-thread job running, two inference threads made a click 5-8x slower than one.
        """
        if self.inference_threads:
            return self.inference_threads
        return max(1, (os.cpu_count() or 1) - self.jobs_max_running * self.job_threads)

    def admin_secret(self) -> str | None:
        """The admin token, from the setting or the token file; None when the admin API is disabled."""
        if self.admin_token is not None and self.admin_token.get_secret_value():
            return self.admin_token.get_secret_value()
        if self.admin_token_file:
            token = Path(self.admin_token_file).read_text().strip()
            return token or None
        return None

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
