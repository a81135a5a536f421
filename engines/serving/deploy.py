"""Which version of each model serves: registration at start-up, deployment, rollback, add and delete.

Ties the :class:`~engines.serving.versions.ModelStore` (versions on disk) to the
:class:`~engines.serving.pool.EnginePool` (what answers requests). A deployment builds and
warms the new version beside the serving one and switches atomically; when it fails,
the old version keeps serving and the serving pointer is unchanged.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from engines.backends.base import select_device
from engines.backends.selection import choose_export, read_report, speedup
from engines.config.model import ModelConfig, PoolEntry, load_model_config
from engines.errors import ConfigError, ModelNotFoundError, ModelUnavailableError
from engines.hardware import detect
from engines.serving.pool import EnginePool
from engines.serving.versions import ModelStore, VersionFiles, check_model_name
from engines.tasks.registry import ENGINE_CLASSES, engine_for_type

__all__ = ["ServingManager", "clara_engine"]

log = logging.getLogger(__name__)


def clara_engine(model_type: str) -> tuple[str, str]:
    """The Clara ``class``/``module`` pair a model of ``model_type`` is served with when none is given
    (the first one registered for its engine kind in :data:`engines.tasks.registry.ENGINE_CLASSES`)."""
    cls = engine_for_type(model_type)
    return next(pair for pair, engine in ENGINE_CLASSES.items() if engine is cls)


class ServingManager:
    """Versions of the pool's models: the store is the record, the pool what serves."""

    def __init__(self, pool: EnginePool, store: ModelStore, warmup: bool = True) -> None:
        self.pool = pool
        self.store = store
        self.warmup = warmup
        # Deploy, add and delete change what serves: one at a time (add deploys, hence re-entrant).
        self._deploy_lock = threading.RLock()
        self._failed: dict[str, tuple[str, str]] = {}  # model -> (version that failed to load at start, why)

    def sync_at_start(self) -> None:
        """Give every configured model a first version, and serve each model's recorded serving version.

        A model from ``engine_pool.json`` with no version yet is registered as its own config's
        version (``1`` unless the config names a number), so a restart serves what was deployed
        before it. Models added through the admin API come back; a configured model that left
        ``engine_pool.json`` does not.
        """
        for record in self.pool.records():
            if record.entry is None or record.config_path is None or record.engine is None:
                continue
            if not self.store.numbers(record.name):
                if record.entry.bundle is not None:
                    self._register_configured_bundle(record.name, record.entry, record.config_path)
                else:
                    self._register_configured(record.name, record.entry, record.config_path, record.engine.version)
        for name in self.store.models():
            serving = self.store.serving(name)
            current = self.pool.record(name)
            if current is None and (self.store.entry(name) or {}).get("origin") != "upload":
                continue  # a configured model no longer in engine_pool.json stays off
            if serving is None or (current is not None and current.engine is not None
                                   and current.engine.version == serving):
                continue
            if current is not None and current.engine is not None and self._runs_configured(name, serving, current):
                current.engine.version = serving  # the pool loaded this very version from engine_pool.json
                continue
            try:
                self.deploy(name, serving)
            except Exception as exc:  # a broken version must not stop the server; it is reported
                self._failed[name] = (serving, str(exc))
                log.error("model %s: serving version %s failed to load: %s", name, serving, exc)

    def _register_configured(self, name: str, entry: PoolEntry, config_path: Path, version: str) -> None:
        config = load_model_config(config_path, name)
        weights = [(config_path.parent / str(m.model_path)).resolve() for m in config.members()]
        beside = [w.parent for w in weights]
        number = int(version) if version.isdigit() and int(version) > 0 else 1
        self.store.set_entry(name, {**entry.model_dump(by_alias=True, exclude={"config_file", "version"},
                                                       exclude_none=True), "origin": "configured"})
        self.store.register(name, VersionFiles(config, weights, [b / "train_config.json" for b in beside],
                                               [b / "metrics.json" for b in beside], config_path.parent),
                            source={"kind": "configured", "config_file": str(config_path)}, number=number)
        self.store.set_serving(name, number)
        log.info("model %s: registered the configured model as version %s", name, number)

    def _register_configured_bundle(self, name: str, entry: PoolEntry, folder: Path) -> None:
        """A configured bundle folder becomes version 1 (a copy: the folder may change, a version never does)."""
        fields = entry.model_dump(by_alias=True, exclude={"config_file", "version", "bundle", "class_", "module"},
                                  exclude_none=True)
        self.store.set_entry(name, {**fields, "bundle": True, "origin": "configured"})
        self.store.register_bundle(name, folder, source={"kind": "configured", "config_file": str(folder)}, number=1)
        self.store.set_serving(name, 1)
        log.info("model %s: registered the configured bundle %s as version 1", name, folder)

    def _runs_configured(self, name: str, version: str, record: Any) -> bool:
        """Whether ``version`` was registered from the very config (or bundle) the pool loaded ``record`` from."""
        source = self.store.info(name, version).get("source", {})
        return source.get("kind") == "configured" and source.get("config_file") == str(record.config_path)

    def entry(self, name: str, version: str) -> PoolEntry:
        """The pool entry that serves one stored version."""
        fields = {k: v for k, v in (self.store.entry(name) or {}).items() if k != "origin"}
        bundle = self.store.bundle_dir(name, version)
        if bundle is not None:  # a MONAI bundle's version: the bundle folder is its config
            fields.pop("bundle", None)
            return PoolEntry.model_validate({**fields, "name": name, "bundle": str(bundle), "version": str(version)})
        if not fields:
            config = load_model_config(self.store.config_path(name, version))
            cls, module = clara_engine(config.type)
            fields = {"name": name, "class": cls, "module": module}
        return PoolEntry.model_validate({**fields, "name": name,
                                         "config_file": str(self.store.config_path(name, version)),
                                         "version": str(version)})

    def deploy(self, name: str, version: str) -> dict[str, Any]:
        """Serve ``version`` of ``name``: load and warm it, switch atomically, record it as serving.

        Raises:
            ModelNotFoundError: no such model or version.
            EngineError: the version failed to load (the old one still serves).
        """
        check_model_name(name)
        with self._deploy_lock:
            entry = self.entry(name, version)
            self.pool.swap(entry, Path("/"), warmup=self.warmup)
            self.store.set_serving(name, version)
            self._failed.pop(name, None)
        return {"model": name, "version": str(int(version))}

    def serving_version(self, name: str) -> str | None:
        """The version that really serves: the recorded one unless it failed to load at start-up, in which
        case the version the pool still runs (its configured one), or None when nothing of it serves."""
        recorded = self.store.serving(name)
        if name not in self._failed:
            return recorded
        record = self.pool.record(name)
        if record is None or record.engine is None or record.config_path is None:
            return None
        for number in self.store.numbers(name):  # the configured model the pool loaded from engine_pool.json
            source = self.store.info(name, number).get("source", {})
            if source.get("kind") == "configured" and source.get("config_file") == str(record.config_path):
                return str(number)
        return None

    def load_error(self, name: str) -> tuple[str, str] | None:
        """``(version, reason)`` when the recorded serving version failed to load at start-up."""
        return self._failed.get(name)

    def versions(self, name: str) -> list[dict[str, Any]]:
        """Every stored version; ``serving`` marks the one that really serves, ``load_error`` one that failed."""
        serving = self.serving_version(name)
        failed = self._failed.get(name)
        out = []
        for info in self.store.versions(name):
            info = {**info, "serving": info["version"] == serving}
            if failed is not None and info["version"] == failed[0]:
                info["load_error"] = failed[1]
            out.append(info)
        return out

    def serving_config(self, name: str) -> tuple[str, Path]:
        """The version that serves a model (the base of its next job) and its model config path.

        Raises:
            ModelNotFoundError: the model has no stored version.
            ModelUnavailableError: its recorded version failed to load and no other version of it serves.
        """
        check_model_name(name)
        if not self.store.numbers(name):
            raise ModelNotFoundError(f"model '{name}' has no stored versions (GET /v1/models lists the models)")
        version = self.serving_version(name)
        if version is None:
            failed = self._failed.get(name)
            why = f"version {failed[0]} failed to load: {failed[1]}" if failed else "no version serves"
            raise ModelUnavailableError(f"model '{name}' does not serve ({why}); serve a version first "
                                        f"(PUT /admin/models/{name}/serving) or pass params.base_version")
        return version, self.store.config_path(name, version)

    def served_speedup(self, name: str) -> float:
        """How many times faster than its PyTorch checkpoint the serving version runs here (1.0: PyTorch)."""
        _, config_path = self.serving_config(name)
        config = load_model_config(config_path)
        device = select_device(config.device).type
        if config.model_format == "auto":
            candidate = choose_export(config, config_path.parent, detect(), device)
            return (speedup(candidate.report) or 1.0) if candidate is not None else 1.0
        if config.model_format == "pytorch":
            return 1.0
        report = read_report((config_path.parent / str(config.members()[0].model_path)).parent)
        return (speedup(report) if report else None) or 1.0

    def add_model(self, name: str, config: ModelConfig, weights: Path, source: dict[str, Any]) -> dict[str, Any]:
        """Add a model (one network) or a new version of it from a config and a weights file, and serve it."""
        check_model_name(name)
        if config.ensemble:
            raise ConfigError("an uploaded model must be one network ('model_path'), not an 'ensemble'")
        # Paths in an uploaded config would name files on this server: it serves its own weights only.
        config = config.model_copy(update={"exports": [], "datalist": None})
        with self._deploy_lock:
            if self.store.entry(name) is None:
                cls, module = clara_engine(config.type)
                self.store.set_entry(name, {"name": name, "class": cls, "module": module, "labels": config.labels,
                                            "origin": "upload"})
            version = self.store.register(name, VersionFiles(config, [weights], [None], [None]), source=source)
            return self._deploy_new(name, version)

    def add_bundle(self, name: str, bundle: Path, overrides: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
        """Store a bundle folder as a new version of model ``name`` (a new model if none) and serve it.

        ``overrides`` (literal values) apply to every version of the model from now on.

        Raises:
            ModelLoadError: the bundle does not load (a new model is then not kept; the old version serves).
        """
        check_model_name(name)
        with self._deploy_lock:
            entry = self.store.entry(name) or {"name": name, "bundle": True, "origin": "upload"}
            self.store.set_entry(name, {**entry, "overrides": overrides})
            version = self.store.register_bundle(name, bundle, source=source)
            return self._deploy_new(name, version)

    def _deploy_new(self, name: str, version: str) -> dict[str, Any]:
        """Serve a just-registered version; a new model whose first version cannot load is not kept."""
        try:
            return self.deploy(name, version)
        except Exception:
            if len(self.store.numbers(name)) == 1:
                self.store.delete(name)
            raise

    def delete_model(self, name: str) -> None:
        """Stop serving a model and delete its versions."""
        check_model_name(name)
        with self._deploy_lock:
            if self.pool.record(name) is None and not self.store.numbers(name):
                raise ModelNotFoundError(f"model '{name}' not found; GET /v1/models lists the models")
            if self.pool.record(name) is not None:
                self.pool.remove(name)
            self.store.delete(name)
            self._failed.pop(name, None)
