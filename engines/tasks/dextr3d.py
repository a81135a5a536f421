"""The extreme-point (DEXTR3D) annotation engine.

Points arrive as voxel indices of whatever the client uploaded: the full volume,
or a crop the client already resampled (points may then equal the ROI size, and
are clipped). Either way the engine crops around the points plus ``padding`` mm,
so both paths see the same anatomy.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from engines.data.io import Volume
from engines.tasks.base import Engine, InferenceResult, Timer
from engines.transforms import points as P

__all__ = ["Dextr3dEngine"]


class Dextr3dEngine(Engine):
    """Crop around six or more extreme points, segment one object, paste the mask back."""

    type: ClassVar[str] = "annotation"

    def info(self) -> dict[str, Any]:
        """Adds ``padding``, ``roi`` and ``sigma``, which the C++ client and MITK read."""
        info = super().info()
        info.update(padding=self.config.padding, roi=list(self.config.roi or []), sigma=self.config.sigma)
        return info

    def example_input(self) -> tuple[Volume, dict[str, Any]]:
        """The base example (one channel: the point channel is added by the pre-transforms) with the
        six extreme points of its cube."""
        volume, params = super().example_input()
        if volume.array.ndim == 4:
            volume = Volume(volume.array[..., 0].copy(), volume.geometry)
        points = [[8, 16, 16], [23, 16, 16], [16, 8, 16], [16, 23, 16], [16, 16, 8], [16, 16, 23]]
        return volume, {**params, "points": points}

    def infer(self, volume: Volume, params: dict[str, Any]) -> InferenceResult:
        timer = Timer()
        with timer.stage("pre"):
            self.require_3d(volume)
            points = P.parse_points(params.get("points"), volume.shape)
            data = self.apply(self.pre, {"image": volume, "points": points}, "pre-processing")
        with timer.stage("infer"):
            logits = self.run_network(torch.as_tensor(data["image"]))
        with timer.stage("post"):
            box: P.CropBox = data["crop_box"]
            prob = torch.sigmoid(logits[:1]) if logits.shape[0] == 1 else torch.softmax(logits, 0)[1:2]
            prob = P.resize(prob, box.size, mode="trilinear")
            crop = (prob > self.config.thresh).to(torch.uint8)
            crop = self.apply(self.post, {"pred": crop}, "post-processing")["pred"]
            mask = np.zeros(volume.shape, np.uint8)
            mask[box.slices] = np.asarray(torch.as_tensor(crop)[0], dtype=np.uint8)
        timer.timings["total"] = round(sum(timer.timings.values()), 2)
        return InferenceResult(mask, {"points": P.round_points(points)}, timer.timings)
