"""OpenVINO backend (extra ``openvino``): an IR (``.xml`` + ``.bin``) or ONNX file on the CPU.

The model is compiled once per input shape it meets (a click always feeds the same
ROI, a sliding window the same window), which runs faster than one dynamic-shape
compilation. Precision is OpenVINO's execution hint: ``fp32`` pins f32 (OpenVINO
would otherwise pick bf16 on CPUs that have it), ``bf16``/``fp16`` ask for those.
"""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from engines.backends.base import require
from engines.errors import ConfigError

__all__ = ["HINTS", "OpenVINOBackend"]

HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
_MAX_SHAPES = 8


class OpenVINOBackend:
    """Compiled models per input shape, each with a pool of infer requests (one per concurrent call)."""

    name: ClassVar[str] = "openvino"

    def __init__(self, path: str | Path, precision: str = "fp32", threads: int | None = None,
                 shapes: list[tuple[int, ...]] | None = None) -> None:
        ov = require("openvino")
        if precision not in HINTS:
            raise ConfigError(f"OpenVINO runs fp32, bf16 or fp16 here, not '{precision}'")
        self._ov = ov
        self.core = ov.Core()
        try:
            self.model = self.core.read_model(str(path))
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            raise ConfigError(f"{path}: OpenVINO cannot read it: {exc}") from None
        self.precision = precision
        self.device = torch.device("cpu")
        self.properties: dict[str, Any] = {"INFERENCE_PRECISION_HINT": HINTS[precision], "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            self.properties["INFERENCE_NUM_THREADS"] = int(threads)
        self._compiled: OrderedDict[tuple[int, ...], tuple[Any, queue.SimpleQueue]] = OrderedDict()
        self._lock = threading.Lock()
        for shape in shapes or []:  # compile the shapes the export saw now, not on a user's first click
            self._for_shape(tuple(int(v) for v in shape))

    def _for_shape(self, shape: tuple[int, ...]) -> tuple[Any, queue.SimpleQueue]:
        with self._lock:
            if shape in self._compiled:
                self._compiled.move_to_end(shape)
                return self._compiled[shape]
            model = self.model.clone()
            model.reshape({model.inputs[0].get_any_name(): self._ov.PartialShape(list(shape))})
            compiled = self.core.compile_model(model, "CPU", self.properties)
            entry = (compiled, queue.SimpleQueue())
            self._compiled[shape] = entry
            while len(self._compiled) > _MAX_SHAPES:
                self._compiled.popitem(last=False)
            return entry

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(inputs.detach().cpu().numpy(), dtype=np.float32)
        compiled, requests = self._for_shape(tuple(array.shape))
        try:
            request = requests.get_nowait()
        except queue.Empty:
            request = compiled.create_infer_request()
        try:
            request.infer({0: array})
            output = np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)
        finally:
            requests.put(request)
        return torch.from_numpy(output)

    def describe(self) -> dict[str, Any]:
        """Runtime, precision and device."""
        return {"runtime": "openvino", "precision": self.precision, "device": "cpu"}

    def close(self) -> None:
        """Drop the compiled models."""
        with self._lock:
            self._compiled.clear()
        self.model = None
