"""Extreme-point geometry shared by training and inference.

Points are voxel indices ``[i, j, k]`` of the array they refer to. The crop box
around the points is computed in millimetres (``padding``) and clipped to the
image; the crop is resized to the network ROI and the prediction is resized back
and pasted into a full-size mask with exactly the inverse mapping.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms.utils import get_extreme_points

from engines.errors import InvalidPointsError

__all__ = [
    "CropBox",
    "MIN_POINTS",
    "MAX_POINTS",
    "crop_box",
    "extreme_points",
    "parse_points",
    "resize",
    "to_roi",
]

MIN_POINTS = 6
MAX_POINTS = 1000


@dataclass(frozen=True)
class CropBox:
    """A box ``[start, end)`` in voxel indices of the full image."""

    start: tuple[int, ...]
    end: tuple[int, ...]

    @property
    def size(self) -> tuple[int, ...]:
        """Voxel counts of the box per axis."""
        return tuple(e - s for s, e in zip(self.start, self.end))

    @property
    def slices(self) -> tuple[slice, ...]:
        """Index the box out of a spatial array."""
        return tuple(slice(s, e) for s, e in zip(self.start, self.end))


def parse_points(
    raw: object,
    shape: Sequence[int],
    *,
    minimum: int = MIN_POINTS,
    tolerance: float = 1.0,
) -> np.ndarray:
    """Validate click points and clip them into the image.

    Accepts a list of ``[i, j, k]`` or its JSON text (clients before 2021 sent a
    string). Points up to ``tolerance`` voxels outside the image are clipped onto
    its edge (client-side resampling can produce index ``size``); anything further
    out is refused.

    Returns:
        float array of shape (N, 3).

    Raises:
        InvalidPointsError: missing, malformed, too few/many or absurd points.
    """
    import json

    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raise InvalidPointsError("'points' is a string that is not JSON") from None
    if raw is None:
        raise InvalidPointsError("'points' is missing: send at least 6 extreme points [[i, j, k], ...]")
    if not isinstance(raw, (list, tuple)):
        raise InvalidPointsError("'points' must be a list of [i, j, k] voxel indices")
    if len(raw) > MAX_POINTS:
        raise InvalidPointsError(f"too many points ({len(raw)}); at most {MAX_POINTS}")
    ndim = len(shape)
    rows = []
    for n, point in enumerate(raw):
        if (
            not isinstance(point, (list, tuple))
            or len(point) != ndim
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in point)
        ):
            raise InvalidPointsError(f"point {n} is {point!r}; each point must be {ndim} numbers [i, j, k]")
        rows.append([float(v) for v in point])
    if len(rows) < minimum:
        raise InvalidPointsError(f"got {len(rows)} points; at least {minimum} extreme points are needed")
    points = np.asarray(rows, dtype=np.float64).reshape(-1, ndim)
    if not np.all(np.isfinite(points)):
        raise InvalidPointsError("points must be finite numbers")
    upper = np.asarray(shape, dtype=np.float64) - 1
    outside = np.any((points < -tolerance) | (points > upper + tolerance), axis=1)
    if np.any(outside):
        first = int(np.argmax(outside))
        raise InvalidPointsError(
            f"point {first} {rows[first]} lies outside the image of size {list(shape)}"
        )
    return np.clip(points, 0, upper)


def crop_box(
    points: np.ndarray,
    spacing: Sequence[float],
    padding_mm: float,
    shape: Sequence[int],
) -> CropBox:
    """The box around ``points`` enlarged by ``padding_mm`` per side, clipped to the image."""
    pad = np.asarray([padding_mm / max(float(s), 1e-6) for s in spacing])
    low = np.floor(points.min(axis=0) - pad).astype(int)
    high = np.ceil(points.max(axis=0) + pad).astype(int) + 1
    start = np.clip(low, 0, np.asarray(shape) - 1)
    end = np.maximum(np.clip(high, 1, np.asarray(shape)), start + 1)
    return CropBox(tuple(int(v) for v in start), tuple(int(v) for v in end))


def to_roi(points: np.ndarray, box: CropBox, roi: Sequence[int]) -> np.ndarray:
    """Map full-image voxel indices into the resized crop (voxel centres, align_corners=False)."""
    scale = np.asarray(roi, dtype=np.float64) / np.asarray(box.size, dtype=np.float64)
    mapped = (points - np.asarray(box.start) + 0.5) * scale - 0.5
    return np.clip(mapped, 0, np.asarray(roi) - 1)


def resize(array: torch.Tensor | np.ndarray, size: Sequence[int], mode: str = "trilinear") -> torch.Tensor:
    """Resize a channel-first spatial array (C, *spatial) to ``size``.

    ``trilinear`` for images and probabilities, ``nearest-exact`` for labels (plain ``nearest`` is off by half a voxel); the same
    call maps crop -> ROI and ROI -> crop so that the two are exact inverses.
    """
    tensor = torch.as_tensor(np.asarray(array) if isinstance(array, np.ndarray) else array).float()
    if tuple(tensor.shape[1:]) == tuple(size):
        return tensor
    kwargs = {"align_corners": False} if mode in ("linear", "bilinear", "trilinear") else {}
    return F.interpolate(tensor[None], size=tuple(int(s) for s in size), mode=mode, **kwargs)[0]


def extreme_points(
    mask: np.ndarray,
    rng: np.random.RandomState | None = None,
    perturbation: float = 0.0,
) -> np.ndarray:
    """The 2*ndim extreme points of a binary mask, optionally jittered.

    Among the voxels on each extreme plane one is picked (at random with ``rng``,
    else the first); ``perturbation`` adds uniform noise in ``[-p, p]`` voxels per
    axis to simulate an annotator's clicks. MONAI picks the voxels; the noise is
    added here because MONAI's own perturbation is one-sided.
    """
    if not np.any(mask):
        return np.zeros((0, mask.ndim))
    if rng is None:
        points = _first_extreme_points(mask)
    else:
        points = np.asarray(get_extreme_points(mask, rand_state=rng, pert=0.0), dtype=np.float64)
    if perturbation > 0 and rng is not None:
        points = points + rng.uniform(-perturbation, perturbation, size=points.shape)
    return np.clip(points, 0, np.asarray(mask.shape) - 1)


def _first_extreme_points(mask: np.ndarray) -> np.ndarray:
    indices = np.argwhere(mask)
    points = []
    for axis in range(mask.ndim):
        for value in (indices[:, axis].min(), indices[:, axis].max()):
            points.append(indices[indices[:, axis] == value][0])
    return np.asarray(points, dtype=np.float64)


def simulated_params(model_type: str, label: np.ndarray, rng: np.random.RandomState | None = None,
                     perturbation: float = 0.0) -> dict:
    """The request a labelled case stands for, as Clara's inference simulated it.

    An annotation model gets the six extreme points of every labelled voxel (one object),
    jittered by up to ``perturbation`` voxels with ``rng``; an interactive (deepgrow) model one
    click on the labelled voxel nearest the object's centroid; a segmentation model nothing.
    """
    if model_type == "deepgrow":
        inside = np.argwhere(np.asarray(label) > 0)
        if len(inside) == 0:
            return {"foreground": [], "background": []}
        centre = inside[np.argmin(((inside - inside.mean(0)) ** 2).sum(1))]
        return {"foreground": [centre.astype(int).tolist()], "background": []}
    if model_type != "annotation":
        return {}
    return {"points": extreme_points(np.asarray(label) > 0, rng, perturbation).tolist()}


def round_points(points: np.ndarray) -> list[list[int]]:
    """Points as JSON-ready integer lists."""
    return [[int(math.floor(v + 0.5)) for v in p] for p in np.asarray(points)]
