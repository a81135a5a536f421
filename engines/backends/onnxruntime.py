"""ONNX Runtime backend (extra ``onnx``): CPU, or CUDA where the GPU build is installed."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from engines.backends.base import require
from engines.errors import ConfigError

__all__ = ["OnnxRuntimeBackend"]

_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


class OnnxRuntimeBackend:
    """One ``InferenceSession`` (thread-safe ``run``) over an ONNX file."""

    name: ClassVar[str] = "onnxruntime"

    def __init__(self, path: str | Path, device: torch.device | str = "cpu", precision: str = "fp32",
                 threads: int | None = None) -> None:
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = int(threads)
        self.device = torch.device(device)
        providers = ["CPUExecutionProvider"]
        if self.device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ConfigError("ONNX Runtime was asked for CUDA but this onnxruntime build has no CUDA provider "
                                  "(install onnxruntime-gpu)")
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            raise ConfigError(f"{path}: ONNX Runtime cannot load it: {exc}") from None
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        self.input_dtype = _NUMPY_TYPES.get(first.type, np.float32)
        self.precision = precision

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        array = inputs.detach().cpu().numpy().astype(self.input_dtype, copy=False)
        output = self.session.run(None, {self.input_name: array})[0]
        return torch.from_numpy(np.asarray(output, dtype=np.float32))

    def describe(self) -> dict[str, Any]:
        """Runtime, precision and device."""
        return {"runtime": "onnxruntime", "precision": self.precision, "device": str(self.device)}

    def close(self) -> None:
        """Drop the session."""
        self.session = None
