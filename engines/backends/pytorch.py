"""PyTorch backend: a checkpoint loaded into its network, or a TorchScript file.

On CUDA it can run in fp16 or bf16 (autocast) and through ``torch.compile`` with CUDA
graphs; on the CPU it runs fp32 eager, the reference every export is compared against.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch

from engines.config.model import ModelConfig
from engines.errors import BackendUnavailableError, ConfigError
from engines.networks import build_network

__all__ = ["TorchBackend", "load_state_dict", "saved_state_dict"]

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Weights only (never pickled code), plain or under ``state_dict``, as float32."""
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}


def saved_state_dict(state: dict[str, torch.Tensor], half: bool = True) -> dict[str, torch.Tensor]:
    """Weights as they are written to disk: on the CPU, floating point as fp16 when ``half`` (what
    :func:`load_state_dict` reads back as float32)."""
    return {k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu()) for k, v in state.items()}


class TorchBackend:
    """Runs a PyTorch module (eager or TorchScript) without autograd.

    ``max_concurrency`` is how many calls it takes at once (None: any number; 1 for CUDA graphs).
    """

    name: ClassVar[str] = "pytorch"

    def __init__(self, module: torch.nn.Module, device: torch.device | str = "cpu", precision: str = "fp32",
                 compile: bool = False) -> None:
        self.device = torch.device(device)
        if precision not in ("fp32", *_DTYPES):
            raise ConfigError(f"PyTorch runs fp32, fp16 or bf16, not '{precision}'")
        if precision != "fp32" and self.device.type != "cuda":
            raise BackendUnavailableError(f"PyTorch {precision} is served on a CUDA GPU only; this model runs on "
                                          f"{self.device}: use precision fp32 (or an OpenVINO export for bf16)")
        self.precision = precision
        self.module = module.to(self.device).eval()
        self.compiled = bool(compile)
        # On CUDA, "reduce-overhead" also captures CUDA graphs (one launch per call instead of one per layer).
        mode = "reduce-overhead" if self.device.type == "cuda" else "default"
        # A CUDA graph writes every call's output into one static buffer, and replays on one stream:
        # each output is cloned before the next call may overwrite it, and one call runs at a time.
        self.graphed = bool(compile) and self.device.type == "cuda"
        self.max_concurrency: int | None = 1 if self.graphed else None
        self._run = torch.compile(self.module, mode=mode, dynamic=False) if compile else self.module

    @classmethod
    def from_checkpoint(cls, path: str | Path, config: ModelConfig, device: torch.device, **options: Any) -> TorchBackend:
        """Build ``config.network`` and load a state dict into it."""
        if config.network is None:
            raise ConfigError("a PyTorch checkpoint needs a 'network' definition")
        network = build_network(config.network)
        try:
            network.load_state_dict(load_state_dict(path))
        except RuntimeError as exc:
            raise ConfigError(f"{path}: weights do not fit network '{config.network.name}': {exc}") from None
        return cls(network, device, **options)

    @classmethod
    def from_torchscript(cls, path: str | Path, device: torch.device, **options: Any) -> TorchBackend:
        """Load a TorchScript module."""
        return cls(torch.jit.load(str(path), map_location="cpu"), device, **options)

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x = inputs.to(self.device, non_blocking=True)
            if self.precision == "fp32":
                out = self._run(x)
            else:
                with torch.autocast("cuda", dtype=_DTYPES[self.precision]):
                    out = self._run(x)
            # .float() of a float32 tensor is the tensor itself: the graph's buffer, unless cloned.
            return out.float().clone() if self.graphed else out.float()

    def describe(self) -> dict[str, Any]:
        """Runtime, precision and device."""
        runtime = "torchscript" if isinstance(self.module, torch.jit.ScriptModule) else "pytorch"
        return {"runtime": runtime + ("+compile" if self.compiled else ""), "precision": self.precision,
                "device": str(self.device)}

    def close(self) -> None:
        """Release the module (and GPU memory)."""
        self.module = None  # type: ignore[assignment]
        self._run = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
