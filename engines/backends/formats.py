"""The one registry of exported-network formats: runtime, extra, file suffix, precisions and how to open one.

``aiaa export`` builds these formats, ``model_format`` serves them, ``auto`` ranks them, and an
export job accepts them; each reads this table. A new runtime is one backend module and one
entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FORMATS", "Format", "export_format", "open_artifact"]

Opener = Callable[[Path, Any, str, "int | None", dict[str, Any]], Any]


def _torchscript(path: Path, device: Any, precision: str, threads: int | None, options: dict[str, Any]) -> Any:
    from engines.backends.pytorch import TorchBackend

    return TorchBackend.from_torchscript(path, device, precision=precision)


def _onnx(path: Path, device: Any, precision: str, threads: int | None, options: dict[str, Any]) -> Any:
    from engines.backends.onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(path, device, precision=precision, threads=threads)


def _openvino(path: Path, device: Any, precision: str, threads: int | None, options: dict[str, Any]) -> Any:
    from engines.backends.openvino import OpenVINOBackend

    shapes = {tuple(options[k]) for k in ("min_shape", "opt_shape", "max_shape") if options.get(k)}
    return OpenVINOBackend(path, precision=precision, threads=threads, shapes=sorted(shapes))


def _tensorrt(path: Path, device: Any, precision: str, threads: int | None, options: dict[str, Any]) -> Any:
    from engines.backends.tensorrt import ShapeProfile, TensorRTBackend

    profile = None
    if options.get("opt_shape"):
        profile = ShapeProfile(tuple(options["min_shape"]), tuple(options["opt_shape"]), tuple(options["max_shape"]))
    return TensorRTBackend(path, precision=precision, profile=profile,
                           workspace_mb=int(options.get("workspace_mb", 1024)))


@dataclass(frozen=True)
class Format:
    """One exported-network format.

    ``package`` is the runtime's import name (``extra`` installs it); ``precisions`` are what
    ``aiaa export`` builds here; ``cpu_rank``/``gpu_rank`` order formats for ``auto`` when no
    measured speed decides (lower first; None: not served on that device by preference).
    """

    name: str
    package: str
    extra: str | None
    suffix: str
    precisions: tuple[str, ...]
    open: Opener
    cpu_rank: int | None
    gpu_rank: int | None


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("openvino", "openvino", "openvino", ".xml", ("fp32", "bf16", "fp16"), _openvino, 0, None),
    Format("onnx", "onnxruntime", "onnx", ".onnx", ("fp32", "fp16"), _onnx, 1, 2),
    Format("tensorrt", "tensorrt", "tensorrt", ".engine", ("fp32", "fp16"), _tensorrt, None, 0),
    Format("torchscript", "torch", None, ".ts", ("fp32", "fp16", "bf16"), _torchscript, 2, 1),
)}


def export_format(name: str) -> Format:
    """The registered format called ``name``.

    Raises:
        ConfigError: no such format.
    """
    from engines.errors import ConfigError

    try:
        return FORMATS[name]
    except KeyError:
        raise ConfigError(f"unknown export format '{name}': choose one of {', '.join(FORMATS)}") from None


def open_artifact(fmt: str, path: Path, device: Any, precision: str = "fp32", threads: int | None = None,
                  report: dict[str, Any] | None = None) -> Any:
    """Open one exported network with its format's runtime (imported only then)."""
    options = (report or {}).get("options") or {}
    return export_format(fmt).open(path, device, precision, threads, options)
