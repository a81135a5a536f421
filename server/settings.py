"""Server settings (environment variables ``AIAA_*`` or constructor arguments)."""

from __future__ import annotations

from pydantic import Field
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
