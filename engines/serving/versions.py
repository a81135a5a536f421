"""Immutable numbered model versions on disk, and which one serves.

Layout under the store root::

    <root>/<model>/entry.json          how the pool serves it (class, module, labels, description)
    <root>/<model>/serving             the serving version number (replaced atomically)
    <root>/<model>/<N>/model_config.json   the model config, weights paths relative to this folder
    <root>/<model>/<N>/version.json    number, creation time, source (job, datalist, base version), metrics
    <root>/<model>/<N>/...             weights (one per ensemble member), train configs, metrics
    <root>/<model>/<N>/bundle/         a MONAI bundle's version instead: its configs and weights (no model config)

A version is written under a temporary name and renamed into place, so a half-written
version is never visible; a written version is never modified.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from engines.config.model import ModelConfig, load_json, load_model_config
from engines.data.datalist import resolve_dataset_refs
from engines.data.io import write_atomically
from engines.errors import ConfigError, InvalidNameError, ModelNotFoundError, VersionExistsError

__all__ = ["BUNDLE_DIR", "MODEL_NAME", "ModelStore", "VersionFiles", "check_model_name"]

BUNDLE_DIR = "bundle"  # a bundle version's folder inside its version folder
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")  # as a pool entry's name


def check_model_name(name: str) -> str:
    """``name`` when it is a valid model name (no path separators, no ``..``), else :class:`InvalidNameError`."""
    if not MODEL_NAME.match(name) or ".." in name:
        raise InvalidNameError(f"invalid model name {name!r}: use letters, digits, '_', '-' and '.' (not '..')")
    return name


@dataclass
class VersionFiles:
    """What a new version is made of: per network, its weights and optional train config/metrics files."""

    config: ModelConfig
    weights: list[Path]  # one per member, in the config's member order
    train_configs: list[Path | None]
    metrics: list[Path | None]
    config_dir: Path | None = None  # where the config's relative paths (datalist, exports) start
    exports: dict[str, Path] = field(default_factory=dict)  # export folders to copy in, by name (served by 'auto')


class ModelStore:
    """Versions of every model under one root folder (thread-safe registration)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def model_dir(self, name: str) -> Path:
        """The folder of a model's versions."""
        return self.root / check_model_name(name)

    def models(self) -> list[str]:
        """Names of the models with at least one version."""
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and MODEL_NAME.match(p.name)
                      and self.numbers(p.name))

    def numbers(self, name: str) -> list[int]:
        """Version numbers of a model, ascending."""
        folder = self.model_dir(name)
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())

    def version_dir(self, name: str, version: str | int) -> Path:
        """The folder of one version.

        Raises:
            ModelNotFoundError: no such version.
        """
        if not str(version).isdigit() or int(version) not in self.numbers(name):
            raise ModelNotFoundError(f"model '{name}' has no version {version!r}; versions: {self.numbers(name)}")
        return self.model_dir(name) / str(int(version))

    def config_path(self, name: str, version: str | int) -> Path:
        """The model config of one version."""
        return self.version_dir(name, version) / "model_config.json"

    def info(self, name: str, version: str | int) -> dict[str, Any]:
        """The ``version.json`` record of one version."""
        return load_json(self.version_dir(name, version) / "version.json")

    def versions(self, name: str) -> list[dict[str, Any]]:
        """Every version's record, ascending, with ``serving`` set on the serving one."""
        serving = self.serving(name)
        return [{**self.info(name, n), "serving": str(n) == serving} for n in self.numbers(name)]

    def serving(self, name: str) -> str | None:
        """The serving version number, if one was set."""
        path = self.model_dir(name) / "serving"
        return path.read_text().strip() if path.is_file() else None

    def set_serving(self, name: str, version: str | int) -> None:
        """Record the serving version (atomic replace)."""
        self.version_dir(name, version)
        _write_atomic(self.model_dir(name) / "serving", str(int(version)))

    def entry(self, name: str) -> dict[str, Any] | None:
        """The pool entry fields stored for a model (class, module, labels, description)."""
        path = self.model_dir(name) / "entry.json"
        return load_json(path) if path.is_file() else None

    def set_entry(self, name: str, entry: dict[str, Any]) -> None:
        """Store how the pool serves a model."""
        self.model_dir(name).mkdir(parents=True, exist_ok=True)
        _write_atomic(self.model_dir(name) / "entry.json", json.dumps(entry, indent=2))

    def register(self, name: str, files: VersionFiles, source: dict[str, Any], metrics: dict[str, Any] | None = None,
                 number: int | None = None) -> str:
        """Write a new version (the next number unless ``number`` is given) and return its number.

        Weights are copied to ``model.pt`` (one network) or ``member<i>/model.pt`` (an ensemble), and
        the model config is rewritten to point at them.
        """
        def fill(tmp: Path, number: int) -> None:
            config = self._copy_files(files, tmp)
            config["version"] = str(number)
            (tmp / "model_config.json").write_text(json.dumps(config, indent=2))
            load_model_config(tmp / "model_config.json")  # a version that does not parse is never published

        return self._publish(name, fill, source, metrics, number)

    def register_bundle(self, name: str, bundle: Path, source: dict[str, Any], metrics: dict[str, Any] | None = None,
                        number: int | None = None) -> str:
        """Write a new version of a MONAI bundle model: a copy of the ``bundle`` folder (configs, weights, docs).

        What a run leaves beside a bundle (``eval/``, ``__pycache__``) is not copied.

        Raises:
            ConfigError: the folder lacks ``configs/`` or ``models/model.pt``.
        """
        bundle = Path(bundle)
        missing = [p for p in ("configs", "models/model.pt") if not (bundle / p).exists()]
        if missing:
            raise ConfigError(f"bundle {bundle}: no {', '.join(missing)}; a bundle version needs its configs and weights")

        def fill(tmp: Path, number: int) -> None:
            shutil.copytree(bundle, tmp / BUNDLE_DIR, symlinks=False,
                            ignore=shutil.ignore_patterns("eval", "__pycache__"))

        return self._publish(name, fill, source, metrics, number)

    def bundle_dir(self, name: str, version: str | int) -> Path | None:
        """The bundle folder of a bundle version; None for a version of one of our own models."""
        folder = self.version_dir(name, version) / BUNDLE_DIR
        return folder if folder.is_dir() else None

    def _publish(self, name: str, fill: Callable[[Path, int], None], source: dict[str, Any],
                 metrics: dict[str, Any] | None, number: int | None) -> str:
        """Fill a temporary folder, record the version, then rename it into place (never half-visible)."""
        folder = self.model_dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            number = number or (max(self.numbers(name), default=0) + 1)
            if number in self.numbers(name):
                raise VersionExistsError(f"model '{name}' already has a version {number}")
            tmp = Path(tempfile.mkdtemp(prefix=f".{number}-", dir=folder))
            try:
                fill(tmp, number)
                created = datetime.now(timezone.utc).isoformat()
                record = {"version": str(number), "created_at": created, "source": source,
                          "metrics": metrics or {}}
                (tmp / "version.json").write_text(json.dumps(record, indent=2))
                os.rename(tmp, folder / str(number))
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return str(number)

    @staticmethod
    def _copy_files(files: VersionFiles, tmp: Path) -> dict[str, Any]:
        config = files.config.model_dump(mode="json", exclude_none=True)
        if files.config_dir is not None:  # the version's config lives elsewhere: keep what it points at
            if files.config.datalist:
                config["datalist"] = str((files.config_dir / files.config.datalist).resolve())
            config["exports"] = [str((files.config_dir / e).resolve()) for e in files.config.exports]
        for name, folder in files.exports.items():
            shutil.copytree(folder, tmp / "exports" / name)
            config["exports"] = [*config.get("exports", []), f"exports/{name}"]
            config["model_format"] = "auto"  # the checkpoint stays the fallback
        members = files.config.members()
        if len(files.weights) != len(members):
            raise ConfigError(f"{len(files.weights)} weight files for {len(members)} networks")
        for index, weights in enumerate(files.weights):
            sub = Path(f"member{index + 1}") if files.config.ensemble else Path(".")
            (tmp / sub).mkdir(exist_ok=True)
            shutil.copy2(weights, tmp / sub / "model.pt")
            train_config = files.train_configs[index]
            if train_config is not None and Path(train_config).is_file():
                _copy_train_config(Path(train_config), tmp / sub / "train_config.json")
            if files.metrics[index] is not None and Path(files.metrics[index]).is_file():
                shutil.copy2(files.metrics[index], tmp / sub / "metrics.json")
            if files.config.ensemble:
                config["ensemble"][index]["model_path"] = str(sub / "model.pt")
            else:
                config["model_path"] = "model.pt"
        return config

    def delete(self, name: str) -> None:
        """Remove a model and all its versions (moved aside first, so nothing half-deleted serves)."""
        folder = self.model_dir(name)
        if folder.is_dir():
            trash = self.root / f".deleted-{name}-{time.time_ns()}"
            os.rename(folder, trash)
            shutil.rmtree(trash, ignore_errors=True)


def _copy_train_config(source: Path, target: Path) -> None:
    """Copy a train config; the datalists an interactive one trained on (relative to it) become absolute paths."""
    try:
        data = json.loads(source.read_text())
    except ValueError:  # not ours to fix here: kept as it was
        shutil.copy2(source, target)
        return
    if isinstance(data, dict) and isinstance(data.get("datasets"), list):
        data["datasets"] = resolve_dataset_refs(data["datasets"], source.parent)
    target.write_text(json.dumps(data, indent=2))


def _write_atomic(path: Path, text: str) -> None:
    # A unique temporary name per writer (two processes writing one pointer must not share one).
    write_atomically(path, lambda tmp: Path(tmp).write_text(text))
