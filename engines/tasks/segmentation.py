"""The automatic segmentation engine: whole volume, sliding window, argmax."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from engines.data.io import Volume
from engines.errors import InferenceError
from engines.tasks.base import Engine, InferenceResult, Timer
from engines.transforms import points as P

__all__ = ["SegmentationEngine"]


class SegmentationEngine(Engine):
    """Label map with values 1..N in the order of the model's ``labels``.

    The reply's ``points`` are the extreme points of the produced foreground, in
    voxel indices of the input (the clients expect the key, possibly empty). A multi-modal
    model takes a ``[i, j, k, c]`` volume. When the pre-transforms cropped and resized
    (``crop_box``), the class probabilities are resized back into the box on the input grid.
    """

    type: ClassVar[str] = "segmentation"

    def infer(self, volume: Volume, params: dict[str, Any]) -> InferenceResult:
        timer = Timer()
        with timer.stage("pre"):
            self.require_3d(volume, self.input_channels())
            data = self.apply(self.pre, {"image": volume}, "pre-processing")
        with timer.stage("infer"):
            logits = self.run_network(torch.as_tensor(data["image"]))
        with timer.stage("post"):
            if "crop_box" in data:
                logits = _paste_back(torch.softmax(logits, dim=0), data["crop_box"], volume.shape[:3])
            # NumPy's argmax over the few class channels is several times faster than torch's here.
            labels = torch.from_numpy(np.argmax(np.asarray(logits), axis=0)[None].astype(np.uint8))
            labels = self.apply(self.post, {"pred": labels}, "post-processing")["pred"]
            mask = np.asarray(torch.as_tensor(labels)[0], dtype=np.uint8)
            if mask.shape != volume.shape[:3]:
                raise InferenceError(f"the pipeline changed the grid {list(volume.shape)} -> {list(mask.shape)}")
            mask[mask > len(self.labels)] = 0
            points = P.round_points(P.extreme_points(mask > 0))
        timer.timings["total"] = round(sum(timer.timings.values()), 2)
        return InferenceResult(mask, {"points": points, "labels": self.labels}, timer.timings)


def _paste_back(prob: torch.Tensor, box: P.CropBox, shape: tuple[int, ...]) -> torch.Tensor:
    """Class probabilities of a resized crop, resized back into ``box`` of a background-filled grid."""
    full = torch.zeros((prob.shape[0], *shape), dtype=prob.dtype)
    full[0] = 1.0
    full[(slice(None), *box.slices)] = P.resize(prob, box.size, mode="trilinear")
    return full
