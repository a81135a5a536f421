"""The engine contract: one loaded model = pre-transforms -> inferer(backend) -> post-processing."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from engines.config.model import ModelConfig
from engines.data.io import Volume
from engines.errors import EngineError, InferenceError, InvalidImageError, ResourceExhaustedError
from engines.inferers import build_inferer, flip_averaged
from engines.transforms.registry import build_transforms

__all__ = ["Engine", "InferenceResult", "Timer"]


@dataclass
class InferenceResult:
    """A mask on the input's voxel grid, JSON params for the reply, and stage timings (ms)."""

    mask: np.ndarray
    params: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)


class Timer:
    """Collects named stage durations in milliseconds."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round((time.perf_counter() - start) * 1000.0, 2)


class Engine(ABC):
    """Base of all engines. Subclasses set :attr:`type` and implement :meth:`infer`."""

    type: ClassVar[str]

    def __init__(self, name: str, config: ModelConfig, backend: Callable[[torch.Tensor], torch.Tensor],
                 labels: list[str] | None = None, description: str | None = None,
                 version: str | None = None) -> None:
        self.name = name
        self.config = config
        self.backend = backend
        self.network = flip_averaged(backend, config.tta_flips)
        self.labels = list(labels or config.labels)
        self.description = config.description if description is None else description
        self.version = version or config.version
        self.pre = build_transforms(config.pre_transforms)
        self.inferer = build_inferer(config.inferer, config.batch_size)
        self.post = build_transforms(config.post_transforms)

    def info(self) -> dict[str, Any]:
        """The model object of ``GET /v1/models`` (keys the AIAA clients read)."""
        return {
            "name": self.name,
            "type": self.type,
            "labels": self.labels,
            "description": self.description,
            "version": self.version,
        }

    @abstractmethod
    def infer(self, volume: Volume, params: dict[str, Any]) -> InferenceResult:
        """Run the model on a decoded volume with the request's params."""

    def example_input(self) -> tuple[Volume, dict[str, Any]]:
        """A synthetic request this engine accepts (its warm-up): a bright cube in a 32^3 volume with
        the model's image channels (``[i, j, k, c]`` for a multi-channel model) and no params.
        Engine kinds whose requests need more (points, prompts) extend it."""
        from engines.data.io import Geometry

        channels = self.input_channels()
        shape = (32, 32, 32) if channels == 1 else (32, 32, 32, channels)
        array = np.zeros(shape, np.float32)
        array[8:24, 8:24, 8:24] = 1.0
        return Volume(array, Geometry.identity()), {}

    def warmup(self) -> None:
        """Run once on :meth:`example_input` so the first real request is not slow."""
        self.infer(*self.example_input())

    def close(self) -> None:
        """Release the backend."""
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()

    # helpers for subclasses -------------------------------------------------

    def input_channels(self) -> int:
        """Image channels the network takes (``in_channels`` of its definition; 1 when unknown)."""
        network = self.config.network
        return int(network.args.get("in_channels", 1)) if network is not None else 1

    @staticmethod
    def require_3d(volume: Volume, channels: int = 1) -> None:
        """Refuse anything but a 3D scalar volume, or ``[i, j, k, c]`` with the model's ``channels`` (> 1)."""
        if channels > 1:
            if volume.array.ndim != 4 or volume.shape[3] != channels:
                raise InvalidImageError(
                    f"the model takes {channels} image channels (a 4D image [i, j, k, {channels}]); "
                    f"got {volume.array.ndim}D of size {list(volume.shape)}"
                )
        elif volume.array.ndim != 3:
            raise InvalidImageError(f"a 3D volume is required; got {volume.array.ndim}D of size {list(volume.shape)}")
        if min(volume.shape[:3]) < 2:
            raise InvalidImageError(f"the volume is too thin for 3D inference (size {list(volume.shape)})")

    @staticmethod
    def apply(transforms: Callable[[dict], dict], data: dict[str, Any], stage: str) -> dict[str, Any]:
        """Run a transform chain, surfacing engine errors and wrapping everything else."""
        try:
            return transforms(data)
        except Exception as exc:  # MONAI wraps errors in RuntimeError: find ours in the chain
            cause: BaseException = exc
            while True:
                if isinstance(cause, EngineError):
                    raise cause from None
                if cause.__cause__ is None:
                    break
                cause = cause.__cause__
            raise InferenceError(f"{stage} failed: {type(cause).__name__}: {cause}") from exc

    def run_network(self, image: torch.Tensor) -> torch.Tensor:
        """Batch, run the inferer with the backend, and return (C, *spatial) outputs."""
        try:
            out = self.inferer(image[None].float(), self.network)
        except torch.cuda.OutOfMemoryError as exc:  # the device is full now, not broken: worth a retry
            raise ResourceExhaustedError(f"the GPU ran out of memory for this request; retry shortly: {exc}") from exc
        except Exception as exc:
            raise InferenceError(f"network failed: {exc}") from exc
        return torch.as_tensor(out)[0].float().cpu()
