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
from monai.transforms import EnsureChannelFirstd

from engines.data.io import Volume
from engines.tasks.base import Engine, InferenceResult, Timer
from engines.transforms import points as P
from engines.transforms.registry import CropAroundPointsd, ExtremePointsFromLabeld, LoadVolumed

# Pre-processing steps that only load, add a channel axis or simulate points: a crop after them
# sees the same voxels whether the volume was cut to the crop's box first or not.
_LOADING = (LoadVolumed, ExtremePointsFromLabeld, EnsureChannelFirstd)

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

    def input_region(self, volume: Volume, points: np.ndarray) -> P.CropBox | None:
        """The part of ``volume`` the pre-processing reads, when it can be cut out first: the box of the
        pipeline's point crop, if only loading steps come before that crop (nothing that looks at the
        whole image). Cutting it out first gives the same result without copying the rest of a
        (session's) volume to float32 on every click. None: the pipeline needs the whole volume."""
        for transform in getattr(self.pre, "transforms", ()):
            if isinstance(transform, CropAroundPointsd):
                return P.crop_box(points, volume.geometry.spacing, transform.padding, volume.shape[:3])
            if not isinstance(transform, _LOADING):
                return None
        return None

    def infer(self, volume: Volume, params: dict[str, Any]) -> InferenceResult:
        timer = Timer()
        with timer.stage("pre"):
            self.require_3d(volume)
            points = P.parse_points(params.get("points"), volume.shape)
            region = self.input_region(volume, points)
            offset = np.zeros(3, int)
            source = volume
            if region is not None:  # a view of the box: the loader copies only it
                offset = np.asarray(region.start)
                source = Volume(volume.array[region.slices], volume.geometry)
            data = self.apply(self.pre, {"image": source, "points": points - offset}, "pre-processing")
        with timer.stage("infer"):
            logits = self.run_network(torch.as_tensor(data["image"]))
        with timer.stage("post"):
            inner: P.CropBox = data["crop_box"]
            box = P.CropBox(tuple(int(v) for v in np.asarray(inner.start) + offset),
                            tuple(int(v) for v in np.asarray(inner.end) + offset))
            prob = torch.sigmoid(logits[:1]) if logits.shape[0] == 1 else torch.softmax(logits, 0)[1:2]
            prob = P.resize(prob, box.size, mode="trilinear")
            crop = (prob > self.config.thresh).to(torch.uint8)
            crop = self.apply(self.post, {"pred": crop}, "post-processing")["pred"]
            mask = np.zeros(volume.shape, np.uint8)
            mask[box.slices] = np.asarray(torch.as_tensor(crop)[0], dtype=np.uint8)
        timer.timings["total"] = round(sum(timer.timings.values()), 2)
        return InferenceResult(mask, {"points": P.round_points(points)}, timer.timings)
