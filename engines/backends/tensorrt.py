"""TensorRT backend (extra ``tensorrt``, NVIDIA GPUs): build from ONNX, cache, run on torch CUDA buffers.

Written against TensorRT's Python API 10.x and 11.x. TensorRT 11 removed the fp16 builder
flag: fp16 there comes from a strongly typed network built from an fp16 ONNX graph (which
``aiaa export --format tensorrt --precision fp16`` writes); on 10.x the flag is used with the
fp32 graph. Engines are cached per GPU model, TensorRT version and build options, so a
restart deserializes instead of rebuilding.

The shape profile logic (:class:`ShapeProfile`) is plain Python and tested everywhere; the
parts that need ``tensorrt`` and a GPU run only where both exist.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from engines.backends.base import require
from engines.data.io import write_atomically
from engines.errors import BackendUnavailableError, ConfigError

__all__ = ["ShapeProfile", "TensorRTBackend", "build_serialized_engine", "engine_cache_path", "parse_shape"]


def parse_shape(text: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """``"1x2x48x48x48"``, ``"1,2,48,48,48"`` or a sequence -> a tuple of positive ints."""
    if text is None:
        return None
    parts = text if not isinstance(text, str) else text.replace("x", ",").replace("X", ",").split(",")
    try:
        shape = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        raise ConfigError(f"a shape is numbers separated by 'x' or ',' (e.g. 1x2x48x48x48), not {text!r}") from None
    if not shape or any(s < 1 for s in shape):
        raise ConfigError(f"shape dimensions must be positive, not {text!r}")
    return shape


@dataclass(frozen=True)
class ShapeProfile:
    """A TensorRT optimization profile: the smallest, typical and largest input shapes."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    @classmethod
    def build(cls, opt: Sequence[int], min_shape: Sequence[int] | None = None, max_shape: Sequence[int] | None = None,
              max_batch: int = 1) -> ShapeProfile:
        """Complete a profile around ``opt`` (``(B, C, *spatial)``).

        Missing bounds default to ``opt`` with batch 1 (min) and batch ``max_batch`` (max). A bound
        given as spatial sizes only takes batch and channels from ``opt``.
        """
        opt = tuple(int(v) for v in opt)
        if len(opt) < 3:
            raise ConfigError(f"an input shape is (batch, channels, *spatial), not {opt}")

        def complete(shape: Sequence[int] | None, batch: int) -> tuple[int, ...]:
            if shape is None:
                return (batch, *opt[1:])
            shape = tuple(int(v) for v in shape)
            if len(shape) == len(opt) - 2:
                return (batch, opt[1], *shape)
            if len(shape) != len(opt):
                raise ConfigError(f"shape {shape} does not have the rank of {opt}")
            return shape

        if max_batch < 1:
            raise ConfigError(f"max batch must be at least 1, not {max_batch}")
        low = complete(min_shape, 1)
        high = complete(max_shape, max(max_batch, opt[0]))
        if high[0] < max_batch:
            high = (max_batch, *high[1:])
        if not all(a <= b <= c for a, b, c in zip(low, opt, high)):
            raise ConfigError(f"shapes must satisfy min <= opt <= max on every axis: {low} / {opt} / {high}")
        if not (low[1] == opt[1] == high[1]):
            raise ConfigError(f"the channel count cannot vary within a profile: {low[1]} / {opt[1]} / {high[1]}")
        return cls(low, opt, high)

    def contains(self, shape: Sequence[int]) -> bool:
        """Whether an input of this shape can run on an engine built with this profile."""
        return len(shape) == len(self.opt) and all(a <= s <= b for a, s, b in zip(self.min, shape, self.max))

    @property
    def dynamic_axes(self) -> list[int]:
        """Axes whose size varies within the profile (dynamic in the ONNX graph)."""
        return [i for i, (a, b) in enumerate(zip(self.min, self.max)) if a != b]


def engine_cache_path(onnx_path: Path, cache_dir: Path, gpu_name: str, trt_version: str, precision: str,
                      profile: ShapeProfile, workspace_mb: int) -> Path:
    """Where the engine built from ``onnx_path`` with these options on this GPU is cached."""
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()[:16]
    options = json.dumps({"precision": precision, "profile": asdict(profile), "workspace_mb": workspace_mb},
                         sort_keys=True)
    key = hashlib.sha256(f"{digest}|{options}".encode()).hexdigest()[:16]
    gpu = "".join(c if c.isalnum() else "_" for c in gpu_name)
    return cache_dir / f"trt{trt_version}" / gpu / f"{onnx_path.stem}-{precision}-{key}.engine"


def _major(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])


def build_serialized_engine(onnx_path: Path, precision: str, profile: ShapeProfile, workspace_mb: int) -> bytes:
    """Parse an ONNX graph and build a serialized engine with one optimization profile.

    Raises:
        BackendUnavailableError: no ``tensorrt`` package or no GPU.
        ConfigError: the graph does not parse or the build fails.
    """
    trt = require("tensorrt")
    if precision not in ("fp32", "fp16"):
        raise ConfigError(f"TensorRT engines are built fp32 or fp16 here, not '{precision}'")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    strongly_typed = precision == "fp16" and not hasattr(trt.BuilderFlag, "FP16")  # TensorRT 11
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    if _major(trt) < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ConfigError(f"{onnx_path}: TensorRT cannot parse the ONNX graph: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if precision == "fp16" and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
    trt_profile = builder.create_optimization_profile()
    trt_profile.set_shape(network.get_input(0).name, profile.min, profile.opt, profile.max)
    config.add_optimization_profile(trt_profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ConfigError(f"{onnx_path}: TensorRT failed to build an engine (see the log above)")
    return bytes(serialized)


class TensorRTBackend:
    """A deserialized engine run on torch CUDA tensors on its own CUDA stream (no pycuda needed)."""

    name: ClassVar[str] = "tensorrt"

    def __init__(self, path: str | Path, precision: str = "fp32", profile: ShapeProfile | None = None,
                 workspace_mb: int = 1024, cache_dir: str | Path | None = None) -> None:
        trt = require("tensorrt")
        if not torch.cuda.is_available():
            raise BackendUnavailableError("TensorRT needs a CUDA GPU; none is available")
        path = Path(path)
        self.device = torch.device("cuda")
        self.precision = precision
        logger = trt.Logger(trt.Logger.WARNING)
        if path.suffix == ".onnx":
            if profile is None:
                raise ConfigError(f"{path}: building a TensorRT engine from ONNX needs a shape profile")
            cache = engine_cache_path(path, Path(cache_dir or path.parent / "trt_cache"),
                                      torch.cuda.get_device_name(0), trt.__version__, precision, profile, workspace_mb)
            if not cache.is_file():
                cache.parent.mkdir(parents=True, exist_ok=True)
                data = build_serialized_engine(path, precision, profile, workspace_mb)
                write_atomically(cache, lambda tmp: Path(tmp).write_bytes(data))
            path = cache
        self.runtime = trt.Runtime(logger)
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ConfigError(f"{path}: not a TensorRT engine for this GPU and TensorRT version")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        modes = {n: self.engine.get_tensor_mode(n) for n in names}
        self.input_name = next(n for n in names if modes[n] == trt.TensorIOMode.INPUT)
        self.output_name = next(n for n in names if modes[n] == trt.TensorIOMode.OUTPUT)
        self.input_dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(self.input_name))
        self.output_dtype = _torch_dtype(trt, self.engine.get_tensor_dtype(self.output_name))
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        self._lock = threading.Lock()  # one execution context: one call at a time
        self.max_concurrency = 1

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        with self._lock, torch.cuda.stream(self.stream):
            x = inputs.to(self.device, self.input_dtype, non_blocking=True).contiguous()
            self.context.set_input_shape(self.input_name, tuple(x.shape))
            out = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), device=self.device,
                              dtype=self.output_dtype)
            self.context.set_tensor_address(self.input_name, x.data_ptr())
            self.context.set_tensor_address(self.output_name, out.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
            self.stream.synchronize()
            return out.float()

    def describe(self) -> dict[str, Any]:
        """Runtime, precision and device."""
        return {"runtime": "tensorrt", "precision": self.precision, "device": "cuda"}

    def close(self) -> None:
        """Free the context and engine (and their GPU memory)."""
        self.context = self.engine = self.runtime = None
        torch.cuda.empty_cache()


def _torch_dtype(trt: Any, dtype: Any) -> torch.dtype:
    return {trt.float32: torch.float32, trt.float16: torch.float16}.get(dtype, torch.float32)
