"""The bundle engine: a MONAI bundle folder served as an automatic segmentation model.

Network, pre-processing, inferer and post-processing come from the bundle's own inference
config (:mod:`engines.tasks.bundle_config`); the decoded upload goes in as the ``MetaTensor``
the bundle's ``LoadImaged`` would have made of the same file, and the mask comes back on the
input's grid with the label values the bundle's post-processing gives (a BraTS bundle: 1, 2, 4).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from engines.backends import TorchBackend, load_artifact, select_device
from engines.backends.selection import choose_export, verified_export
from engines.config.model import ModelConfig, PoolEntry
from engines.data.io import Geometry, Volume
from engines.errors import ConfigError, InferenceError
from engines.hardware import detect
from engines.tasks.base import Engine, InferenceResult, Timer
from engines.tasks.bundle_config import BundleParts, read_bundle
from engines.transforms import points as P

__all__ = ["BUNDLE_WEIGHTS", "BundleEngine", "bundle_export_backend", "load_bundle_engine", "volume_to_metatensor"]

BUNDLE_WEIGHTS = Path("models") / "model.pt"

# ITK's physical space is LPS; MONAI's readers give RAS affines.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def volume_to_metatensor(volume: Volume, channels: int) -> Any:
    """The ``MetaTensor`` MONAI's ``LoadImaged`` makes of the same image (several files: channel first).

    A one-channel image has no channel axis (``EnsureChannelFirstd`` adds it); a multi-channel
    ``[i, j, k, c]`` volume becomes ``[c, i, j, k]``, as ``LoadImaged`` stacks a list of files.
    """
    from monai.data import MetaTensor

    spacing = np.asarray(volume.geometry.spacing, dtype=np.float64)
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(volume.geometry.direction, dtype=np.float64).reshape(3, 3) * spacing
    affine[:3, 3] = volume.geometry.origin
    affine = _LPS_TO_RAS @ affine
    array = np.asarray(volume.array, dtype=np.float32)
    if channels > 1:
        array = np.moveaxis(array, -1, 0)
        channel_dim: Any = 0
    else:
        channel_dim = float("nan")  # MONAI's "no channel" marker
    meta = {"original_affine": affine.copy(), "spatial_shape": np.asarray(volume.shape[:3]),
            "original_channel_dim": channel_dim, "space": "RAS", "filename_or_obj": "upload"}
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(array)), affine=torch.as_tensor(affine), meta=meta)


class BundleEngine(Engine):
    """A MONAI bundle's inference pipeline; labels and input channels from its ``metadata.json``."""

    type: ClassVar[str] = "segmentation"

    def __init__(self, name: str, parts: BundleParts, backend: TorchBackend, description: str | None = None,
                 version: str | None = None) -> None:
        # The bundle's config replaces our model config: no Clara transforms or inferer to build.
        self.name = name
        self.config = None  # type: ignore[assignment]
        self.parts = parts
        self.backend = backend
        self.network = backend
        self.labels = list(parts.labels)
        self.description = parts.description if description is None else description
        self.version = version or parts.version
        self.pre = parts.preprocessing
        self.inferer = parts.inferer
        self.post = parts.postprocessing
        # Transform chains keep state while they run (Invertd reads the image's trace): one request at a time.
        self._lock = threading.Lock()

    def input_channels(self) -> int:
        """Image channels the bundle takes (``metadata.json``), in its ``channel_def`` order."""
        return self.parts.channels

    def warmup(self) -> None:
        """Run once on a small synthetic volume with the bundle's channels."""
        shape = (32, 32, 32) + ((self.parts.channels,) if self.parts.channels > 1 else ())
        array = np.zeros(shape, np.float32)
        array[8:24, 8:24, 8:24] = 1.0
        self.infer(Volume(array, Geometry.identity()), {})

    def infer(self, volume: Volume, params: dict[str, Any]) -> InferenceResult:
        """Pre-process, run the bundle's inferer, post-process back onto the input's grid."""
        timer = Timer()
        with self._lock:
            with timer.stage("pre"):
                self.require_3d(volume, self.parts.channels)
                data = self.apply(self.pre, {"image": volume_to_metatensor(volume, self.parts.channels)},
                                  "bundle pre-processing")
            with timer.stage("infer"):
                image = data["image"]
                try:
                    with torch.no_grad():
                        pred = self.inferer(image[None].to(getattr(self.backend, "device", "cpu")), self.network)
                except Exception as exc:
                    raise InferenceError(f"network failed: {type(exc).__name__}: {exc}") from exc
                data["pred"] = pred[0].cpu()
            with timer.stage("post"):
                data = self.apply(self.post, data, "bundle post-processing")
                mask = _label_map(data["pred"])
                if mask.shape != volume.shape[:3]:
                    raise InferenceError(f"the bundle's pipeline changed the grid {list(volume.shape[:3])} -> "
                                         f"{list(mask.shape)}: its post-processing must invert its pre-processing")
                points = P.round_points(P.extreme_points(mask > 0))
        timer.timings["total"] = round(sum(timer.timings.values()), 2)
        return InferenceResult(mask, {"points": points, "labels": self.labels}, timer.timings)


def _label_map(pred: Any) -> np.ndarray:
    """The post-processed prediction as a ``uint8`` ``[i, j, k]`` label map (one channel squeezed)."""
    array = np.asarray(torch.as_tensor(pred).detach().cpu())
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise InferenceError(f"the bundle's post-processing gives shape {list(array.shape)}, not one label map: "
                             "end it with AsDiscreted(argmax=True) or a label conversion")
    if array.min(initial=0) < 0 or array.max(initial=0) > 255:
        raise InferenceError("the bundle's post-processing gives values outside 0..255, not labels")
    return np.ascontiguousarray(np.rint(array).astype(np.uint8))


def bundle_export_backend(bundle: Path, model_format: str, exports: list[str], device: torch.device) -> Any | None:
    """The verified export (``aiaa export --config <bundle>``) a bundle entry serves, or None: its PyTorch network.

    ``auto``: the fastest export in ``exports`` that passed its parity check, was made from
    ``models/model.pt`` as it is now and runs well here (as for our own models). A format's
    name: the export of that format that passed and was made from these weights.

    Raises:
        ConfigError: ``model_format`` names a format that none of ``exports`` provides verified.
    """
    if model_format == "pytorch":
        return None
    # The bundle seen as a one-network model config (its network is the bundle's, not one of ours).
    config = ModelConfig.model_construct(type="segmentation", model_path=str(BUNDLE_WEIGHTS), model_format=model_format,
                                         exports=exports)
    if model_format == "auto":
        chosen = choose_export(config, bundle, detect(), device.type)
    else:
        chosen = verified_export(config, bundle, model_format, device.type)
        if chosen is None:
            raise ConfigError(f"bundle {bundle.name}: model_format '{model_format}' but no folder in 'exports' holds a "
                              f"passed {model_format} export of models/model.pt as it is now "
                              f"(aiaa export --config {bundle})")
    return None if chosen is None else load_artifact(chosen.format, chosen.artifacts()[0], device, chosen.precision,
                                                     report=chosen.report)


def load_bundle_engine(entry: PoolEntry, base_dir: Path, device: str = "auto") -> BundleEngine:
    """Build the engine of a pool entry with ``bundle`` (a folder relative to ``base_dir``).

    Raises:
        ConfigError: the bundle cannot be served (the message says why).
        BackendUnavailableError: a package it needs is not installed.
    """
    folder = (base_dir / str(entry.bundle)).resolve()
    parts = read_bundle(folder, entry.overrides, entry.labels)
    selected = select_device(device)
    exports = [str((base_dir / e).resolve()) for e in entry.exports]
    backend = bundle_export_backend(folder, entry.model_format, exports, selected) or TorchBackend(parts.network,
                                                                                                  selected)
    return BundleEngine(entry.name, parts, backend, description=entry.description, version=entry.version)
