"""The engine pool: loads every configured model, warms it up, keeps per-model status.

A model that fails to load is reported unavailable (with the reason) while the
others serve. Engine classes resolve through :data:`engines.tasks.registry.ENGINE_CLASSES`, keyed by the
Clara ``class``/``module`` names; nothing is imported from a config.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from engines.backends import describe, load_backend
from engines.config.model import PoolEntry, load_model_config, parse_pool
from engines.errors import ConfigError, EngineError, ModelLoadError, ModelNotFoundError, ModelUnavailableError
from engines.serving.batching import MicroBatcher
from engines.tasks.base import Engine
from engines.tasks.bundle import load_bundle_engine
from engines.tasks.registry import engine_class

__all__ = ["EnginePool", "ModelRecord"]

log = logging.getLogger(__name__)

@dataclass
class ModelRecord:
    """One configured model and its state."""

    name: str
    status: Literal["ready", "unavailable"]
    engine: Engine | None = None
    error: str | None = None
    entry: PoolEntry | None = None  # how it was configured (None for engines added directly)
    config_path: Path | None = None

    def summary(self) -> dict[str, Any]:
        """Status for health reports."""
        out: dict[str, Any] = {"status": self.status}
        if self.error:
            out["error"] = self.error
        if self.engine is not None:
            out["type"] = self.engine.type
            out["backend"] = describe(self.engine.backend)
        return out


class EnginePool:
    """All configured models by name; thread-safe for lookups and replacement."""

    def __init__(self) -> None:
        self._records: dict[str, ModelRecord] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, pool_path: str | Path, warmup: bool = True) -> EnginePool:
        """Load ``engine_pool.json``; config paths are relative to its folder.

        Raises:
            ConfigError: the file itself is unreadable or not a list (nothing to serve).
        """
        pool_path = Path(pool_path)
        pool = cls()
        for index, item in enumerate(parse_pool(pool_path)):
            if isinstance(item, ConfigError):
                log.error("model not loaded: %s", item)
                pool._set(ModelRecord(f"<entry {index}>", "unavailable", error=str(item)))
                continue
            pool.load(item, pool_path.parent, warmup=warmup)
        return pool

    def load(self, entry: PoolEntry, base_dir: Path, warmup: bool = True) -> ModelRecord:
        """Load (or replace) one model; failures become an unavailable record."""
        entry = _absolute_exports(entry, base_dir)
        config_path = (base_dir / entry.config_file).resolve()
        try:
            engine = self._build(entry, base_dir)
            if warmup:
                engine.warmup()
            record = ModelRecord(entry.name, "ready", engine, entry=entry, config_path=config_path)
            runtime = describe(engine.backend)
            log.info("model %s ready (%s, version %s) on %s %s, %s", entry.name, engine.type, engine.version,
                     runtime["runtime"], runtime["precision"], runtime["device"])
        except EngineError as exc:
            record = ModelRecord(entry.name, "unavailable", error=str(exc), entry=entry, config_path=config_path)
            log.error("model %s unavailable: %s", entry.name, exc)
        except Exception as exc:  # a broken model must never stop the pool
            record = ModelRecord(entry.name, "unavailable", error=f"{type(exc).__name__}: {exc}", entry=entry,
                                 config_path=config_path)
            log.exception("model %s unavailable", entry.name)
        self._set(record)
        return record

    def swap(self, entry: PoolEntry, base_dir: Path, warmup: bool = True) -> ModelRecord:
        """Build and warm up ``entry`` beside the serving engine, then switch to it atomically.

        Requests already holding the old engine finish on it; it is released when the last of them
        lets go. A model that fails to build or warm up raises and leaves the old one serving.

        Raises:
            ModelLoadError: the new model failed to build or warm up (the error names why).
        """
        entry = _absolute_exports(entry, base_dir)
        engine = None
        try:
            engine = self._build(entry, base_dir)
            if warmup:
                engine.warmup()
        except Exception as exc:
            if engine is not None:
                engine.close()
            why = str(exc) if isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"
            raise ModelLoadError(f"model '{entry.name}' failed to load: {why}") from exc
        record = ModelRecord(entry.name, "ready", engine, entry=entry,
                             config_path=(base_dir / entry.config_file).resolve())
        self._set(record)
        runtime = describe(engine.backend)
        log.info("model %s now serves version %s on %s %s, %s", entry.name, engine.version, runtime["runtime"],
                 runtime["precision"], runtime["device"])
        return record

    def remove(self, name: str) -> None:
        """Stop serving a model (requests in flight finish on it)."""
        with self._lock:
            if self._records.pop(name, None) is None:
                raise ModelNotFoundError(f"model '{name}' not found; GET /v1/models lists the models")

    def record(self, name: str) -> ModelRecord | None:
        """The record of one model, if configured."""
        with self._lock:
            return self._records.get(name)

    @staticmethod
    def _build(entry: PoolEntry, base_dir: Path) -> Engine:
        if entry.bundle is not None:  # a MONAI bundle folder: its own configs, no model config
            return load_bundle_engine(entry, base_dir)
        cls = engine_class(entry.class_, entry.module)
        config_path = (base_dir / entry.config_file).resolve()
        config = load_model_config(config_path, entry.name)
        if entry.type is not None and entry.type != cls.type:
            raise ConfigError(f"entry '{entry.name}': key 'type': '{entry.type}' does not match engine {entry.class_}")
        if config.type != cls.type:
            raise ConfigError(f"{config_path}: key 'type': '{config.type}' does not match engine {entry.class_}")
        backend = load_backend(config, config_path.parent)
        engine = cls(entry.name, config, backend, labels=entry.labels, description=entry.description,
                     version=entry.version)
        if config.batching is not None:  # concurrent calls meet in the batcher on their way to the network
            engine.network = MicroBatcher(engine.network, config.batching.max_batch, config.batching.max_wait_ms)
        return engine

    def add(self, engine: Engine) -> None:
        """Register an already built engine (tests, future hot-swap)."""
        self._set(ModelRecord(engine.name, "ready", engine))

    def _set(self, record: ModelRecord) -> None:
        # A replaced engine is not closed here: requests in flight may still hold it. Dropping the
        # pool's reference releases it (and its weights) when the last of them finishes.
        with self._lock:
            self._records[record.name] = record

    def get(self, name: str) -> Engine:
        """The ready engine called ``name``.

        Raises:
            ModelNotFoundError: no such model.
            ModelUnavailableError: configured but not loaded.
        """
        record = self.record(name)
        if record is None:
            raise ModelNotFoundError(f"model '{name}' not found; GET /v1/models lists the models")
        if record.engine is None:
            raise ModelUnavailableError(f"model '{name}' is unavailable: {record.error}")
        return record.engine

    def engines(self) -> list[Engine]:
        """Every ready engine, in configuration order."""
        return [r.engine for r in self.records() if r.engine is not None]

    def records(self) -> list[ModelRecord]:
        """Every configured model, ready or not (a snapshot: a deploy may change the pool meanwhile)."""
        with self._lock:
            return list(self._records.values())

    def close(self) -> None:
        """Release every engine."""
        for record in self.records():
            if record.engine is not None:
                record.engine.close()
        with self._lock:
            self._records.clear()


def _absolute_exports(entry: PoolEntry, base_dir: Path) -> PoolEntry:
    """A bundle entry's ``exports`` resolved against the pool file's folder, so that its stored record (and a
    version deployed from it later) finds them wherever it is loaded from."""
    if not entry.exports:
        return entry
    return entry.model_copy(update={"exports": [str((base_dir / e).resolve()) for e in entry.exports]})
