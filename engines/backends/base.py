"""The backend contract and what every runtime module shares.

A backend maps a batch tensor ``(B, C, *spatial)`` to the network's output logits
(float32, on the CPU or the backend's device). Optional runtimes are imported inside
their own module through :func:`require`, so a missing package marks one model
unavailable with the extra to install, never an ImportError at start-up.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import Any, Protocol

import torch

from engines.errors import BackendUnavailableError

__all__ = ["Backend", "describe", "has_module", "max_concurrency", "require", "select_device"]

# Which optional extra of the distribution provides each runtime package.
EXTRAS = {"onnxruntime": "onnx", "onnx": "onnx", "onnxscript": "onnx", "openvino": "openvino", "tensorrt": "tensorrt"}


class Backend(Protocol):
    """What an engine needs from a runtime.

    A backend may declare ``max_concurrency``: how many calls it takes at once (absent or None:
    any number, the runtime is thread-safe); the server admits no more than that per model.
    """

    name: str
    device: torch.device

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor: ...

    def close(self) -> None: ...


def has_module(name: str) -> bool:
    """Whether an optional package is importable (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def require(package: str) -> ModuleType:
    """Import an optional runtime package or explain which extra installs it.

    Raises:
        BackendUnavailableError: the package is not installed (message names the extra).
    """
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        extra = EXTRAS.get(package, package)
        raise BackendUnavailableError(
            f"runtime '{package}' is not installed: install extra {extra} "
            f"(pip install 'aiaa-server[{extra}]'): {exc}"
        ) from None


def select_device(preference: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is an error."""
    if preference == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError("device 'cuda' requested but no CUDA GPU is available")
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preference)


def describe(backend: Any) -> dict[str, Any]:
    """Runtime, precision and device of a backend, for logs and ``/health``."""
    custom = getattr(backend, "describe", None)
    if callable(custom):
        return custom()
    device = getattr(backend, "device", None)
    return {"runtime": getattr(backend, "name", type(backend).__name__), "precision": "fp32",
            "device": str(device) if device is not None else "cpu"}


def max_concurrency(backend: Any) -> int | None:
    """How many calls ``backend`` takes at once (None: no limit of its own)."""
    value = getattr(backend, "max_concurrency", None)
    return int(value) if value else None
