"""Inference backends: a small callable contract around a model runtime.

A backend maps a batch tensor ``(B, C, *spatial)`` to network output logits.
Optional runtimes (ONNX Runtime, OpenVINO, TensorRT) will be further backends
with the same contract, imported inside their own class.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Protocol

import torch

from engines.config import ModelConfig
from engines.errors import BackendUnavailableError, ConfigError
from engines.networks import build_network

__all__ = ["Backend", "MeanEnsemble", "TorchBackend", "load_backend", "select_device"]


class Backend(Protocol):
    """What an engine needs from a runtime."""

    name: str
    device: torch.device

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor: ...

    def close(self) -> None: ...


def select_device(preference: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present; ``cuda`` without a GPU is an error."""
    if preference == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError("device 'cuda' requested but no CUDA GPU is available")
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preference)


class TorchBackend:
    """Runs a PyTorch module (eager or TorchScript) without autograd."""

    name: ClassVar[str] = "pytorch"

    def __init__(self, module: torch.nn.Module, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()

    @classmethod
    def from_checkpoint(cls, path: str | Path, config: ModelConfig, device: torch.device) -> TorchBackend:
        """Build ``config.network`` and load a state dict (plain or under ``state_dict``)."""
        if config.network is None:
            raise ConfigError("a PyTorch checkpoint needs a 'network' definition")
        network = build_network(config.network)
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        try:
            network.load_state_dict({k: v.float() for k, v in state.items()})
        except RuntimeError as exc:
            raise ConfigError(f"{path}: weights do not fit network '{config.network.name}': {exc}") from None
        return cls(network, device)

    @classmethod
    def from_torchscript(cls, path: str | Path, device: torch.device) -> TorchBackend:
        """Load a TorchScript module."""
        return cls(torch.jit.load(str(path), map_location="cpu"), device)

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.module(inputs.to(self.device)).float()

    def close(self) -> None:
        """Release the module (and GPU memory)."""
        self.module = None  # type: ignore[assignment]
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


class MeanEnsemble:
    """Several backends behind one call: the mean of their raw outputs (logits)."""

    name: ClassVar[str] = "ensemble"

    def __init__(self, members: list[Backend]) -> None:
        self.members = list(members)

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        outputs = [member(inputs).float() for member in self.members]
        return torch.stack([o.to(outputs[0].device) for o in outputs]).mean(dim=0)

    def close(self) -> None:
        """Release every member."""
        for member in self.members:
            member.close()


def load_backend(config: ModelConfig, config_dir: Path) -> Backend:
    """Open the runtime the model config asks for (a :class:`MeanEnsemble` for an ensemble).

    Raises:
        ConfigError: missing weights or weights that do not fit.
        BackendUnavailableError: the device is not available.
    """
    if config.ensemble:
        return MeanEnsemble([load_backend(member, config_dir) for member in config.members()])
    path = (config_dir / str(config.model_path)).resolve()
    if not path.is_file():
        raise ConfigError(f"model_path '{config.model_path}' not found (resolved to {path})")
    device = select_device(config.device)
    if config.model_format == "torchscript":
        return TorchBackend.from_torchscript(path, device)
    return TorchBackend.from_checkpoint(path, config, device)
