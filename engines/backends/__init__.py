"""Inference backends: one module per runtime behind one small callable contract.

``load_backend`` opens what a model config asks for: the PyTorch checkpoint
(``pytorch``), an exported artifact (``torchscript``, ``onnx``, ``openvino``,
``tensorrt``), or with ``auto`` the fastest verified export for this hardware
(:mod:`engines.backends.selection`). An ensemble becomes one :class:`MeanEnsemble`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from engines.backends.base import Backend, describe, require, select_device
from engines.backends.ensemble import MeanEnsemble
from engines.backends.formats import FORMATS, open_artifact
from engines.backends.pytorch import TorchBackend, load_state_dict
from engines.backends.selection import Candidate, choose_export, read_report
from engines.config.model import ModelConfig
from engines.errors import ConfigError
from engines.hardware import detect

__all__ = [
    "FORMATS",
    "Backend",
    "MeanEnsemble",
    "TorchBackend",
    "describe",
    "load_artifact",
    "load_backend",
    "load_state_dict",
    "require",
    "select_device",
]

log = logging.getLogger(__name__)


def load_artifact(fmt: str, path: Path, device: Any, precision: str = "fp32", threads: int | None = None,
                  report: dict[str, Any] | None = None) -> Backend:
    """Open one exported network with its runtime (see :data:`engines.backends.formats.FORMATS`)."""
    return open_artifact(fmt, path, device, precision, threads, report)


def _from_export(candidate: Candidate, config: ModelConfig, device: Any) -> Backend:
    backends = [load_artifact(candidate.format, path, device, candidate.precision, config.threads, candidate.report)
                for path in candidate.artifacts()]
    return backends[0] if len(backends) == 1 else MeanEnsemble(backends)


def _checked_artifact(path: Path) -> None:
    """Refuse an artifact whose own export report says parity failed."""
    report = read_report(path.parent)
    if report is not None and report.get("passed") is False:
        raise ConfigError(f"{path}: its export_report.json says the parity check failed; re-export it")


def load_backend(config: ModelConfig, config_dir: Path) -> Backend:
    """Open the runtime the model config asks for.

    Raises:
        ConfigError: missing weights or artifacts, weights that do not fit, a failed export.
        BackendUnavailableError: the device is not available or a runtime extra is not installed.
    """
    device = select_device(config.device)
    if config.model_format == "auto":
        candidate = choose_export(config, config_dir, detect(), device.type)
        if candidate is not None:
            log.info("auto: serving %s %s export %s", candidate.format, candidate.precision, candidate.folder)
            return _from_export(candidate, config, device)
    if config.ensemble:
        return MeanEnsemble([load_backend(member, config_dir) for member in config.members()])
    path = (config_dir / str(config.model_path)).resolve()
    if not path.exists():
        raise ConfigError(f"model_path '{config.model_path}' not found (resolved to {path})")
    if config.model_format in ("pytorch", "auto"):
        return TorchBackend.from_checkpoint(path, config, device, precision=config.precision,
                                            compile=config.torch_compile)
    _checked_artifact(path)
    return load_artifact(config.model_format, path, device, config.precision, config.threads, read_report(path.parent))
