"""Interactive prompts and how a crop of a volume with its prompts becomes network input.

This is the one encoding that training and serving share. Everything is in voxel indices
``[i, j, k]`` of the full (session) volume. A prediction step:

1. :func:`normalise_volume` once per volume (percentile clip then z-score: no modality needed);
2. :func:`crop_box` around the positive prompts and the current mask, with a margin in mm;
3. :func:`encode` the crop, resampled to the network's ROI, as :data:`CHANNELS`;
4. the network's logits at the ROI go back to the crop's shape with :func:`to_crop` and replace
   the mask inside the crop.

Channels (in this order): the normalised image, the current mask, positive prompts (points,
extreme points, positive scribbles), negative prompts (points, scribbles), and the region the
object lies in (a box or a filled lasso; an initial mask enters as the current mask).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from engines.errors import InvalidPointsError

__all__ = ["CHANNELS", "PROMPT_KINDS", "Prompt", "crop_box", "encode", "mask_extent", "normalise_volume", "to_crop",
           "touches_border"]

CHANNELS = ("image", "mask", "positive", "negative", "region")
PROMPT_KINDS = ("point", "box", "scribble", "lasso", "extreme_points", "mask")
POINT_RADIUS = 1.5  # ball radius of a click, in ROI voxels

Kind = Literal["point", "box", "scribble", "lasso", "extreme_points", "mask"]


@dataclass(frozen=True)
class Prompt:
    """One interaction, in voxel indices of the full volume.

    ``voxels`` holds an ``(N, 3)`` int array: the click(s) of a point or extreme points, the
    voxels of a scribble, the filled voxels of a lasso, the foreground of a mask. ``box`` is
    ``(lo, hi)`` with ``hi`` exclusive (a 2D box has one axis of size 1).
    """

    kind: Kind
    positive: bool = True
    voxels: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int32))
    box: tuple[tuple[int, int, int], tuple[int, int, int]] | None = None

    def extent(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Inclusive-exclusive bounding box of what this prompt marks, or None when it marks nothing."""
        if self.box is not None:
            return np.asarray(self.box[0]), np.asarray(self.box[1])
        if len(self.voxels) == 0:
            return None
        return self.voxels.min(0), self.voxels.max(0) + 1

    def check(self, shape: Sequence[int]) -> None:
        """Raise :class:`InvalidPointsError` when this prompt lies outside a volume of ``shape`` or is empty."""
        shape_a = np.asarray(shape)
        if self.box is not None:
            lo, hi = np.asarray(self.box[0]), np.asarray(self.box[1])
            if (lo < 0).any() or (hi > shape_a).any() or (hi <= lo).any():
                raise InvalidPointsError(f"box {list(map(int, lo))}..{list(map(int, hi))} (hi exclusive) is empty "
                                         f"or outside the volume {list(map(int, shape))}")
            return
        if len(self.voxels) == 0 and self.kind != "mask":
            raise InvalidPointsError(f"{self.kind} prompt marks no voxel")
        if len(self.voxels) and ((self.voxels < 0).any() or (self.voxels >= shape_a).any()):
            raise InvalidPointsError(f"{self.kind} prompt has voxels outside the volume {list(map(int, shape))}")


def normalise_volume(array: np.ndarray) -> np.ndarray:
    """Float32 copy clipped to the 0.5/99.5 percentiles and z-scored (CT and MR alike)."""
    a = np.asarray(array, dtype=np.float32)
    finite = a[np.isfinite(a)]
    if finite.size == 0:
        return np.zeros_like(a)
    lo, hi = (float(v) for v in np.percentile(finite, [0.5, 99.5]))
    a = np.clip(np.nan_to_num(a, nan=lo, posinf=hi, neginf=lo), lo, hi)
    std = float(a.std())
    return ((a - float(a.mean())) / (std if std > 1e-6 else 1.0)).astype(np.float32)


def crop_box(shape: Sequence[int], spacing: Sequence[float], prompts: Sequence[Prompt], mask: np.ndarray | None,
             *, margin: float = 0.25, min_size_mm: float = 40.0, zoom: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The crop ``(lo, hi)`` (hi exclusive) that a prediction looks at.

    Around the positive prompts and the current mask (negative prompts only when nothing is
    positive), widened by ``margin`` of the extent on each side and to at least ``min_size_mm``
    per axis, times ``zoom`` (the zoom-out after a prediction reached the border), inside the volume.
    """
    shape_a = np.asarray(shape, dtype=np.int64)
    spacing_a = np.asarray(spacing, dtype=np.float64)
    extents = [e for p in prompts if p.positive and (e := p.extent()) is not None]
    if mask is not None and mask.any():
        extents.append(mask_extent(mask))
    if not extents:
        extents = [e for p in prompts if (e := p.extent()) is not None]
    if not extents:
        return np.zeros(3, np.int64), shape_a.copy()
    lo = np.min([e[0] for e in extents], axis=0).astype(np.float64)
    hi = np.max([e[1] for e in extents], axis=0).astype(np.float64)
    centre = (lo + hi) / 2
    size = (hi - lo) * (1 + 2 * margin)
    size = np.maximum(size, min_size_mm / spacing_a) * zoom
    size = np.minimum(np.maximum(size, 1), shape_a)
    new_lo = np.clip(np.round(centre - size / 2), 0, None).astype(np.int64)
    new_lo = np.minimum(new_lo, shape_a - np.ceil(size).astype(np.int64))
    new_hi = np.minimum(new_lo + np.ceil(size).astype(np.int64), shape_a)
    return new_lo, new_hi


def mask_extent(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounding box ``[lo, hi)`` of a non-empty mask, from its projections (np.nonzero on a whole volume is slow).

    Each axis is projected over the part of the mask that the axes before it left (one pass over the
    whole mask, then over ever smaller boxes), so a small object in a large volume costs one pass.
    """
    lo, hi = [], []
    view = mask
    for axis in range(mask.ndim):
        hit = np.flatnonzero(view.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        lo.append(hit[0])
        hi.append(hit[-1] + 1)
        view = view[(slice(None),) * axis + (slice(hit[0], hit[-1] + 1),)]
    return np.array(lo), np.array(hi)


def _resample(volume: np.ndarray, roi: Sequence[int], mode: str) -> np.ndarray:
    """Channels ``(C, *shape)`` (or one volume) to ``(C, *roi)`` in one interpolation (channels are independent)."""
    t = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))
    t = t[None] if t.ndim == 4 else t[None, None]
    if tuple(t.shape[2:]) != tuple(roi):
        kwargs = {"align_corners": False} if mode == "trilinear" else {}
        t = F.interpolate(t, size=tuple(int(r) for r in roi), mode=mode, **kwargs)
    return t[0].numpy() if volume.ndim == 4 else t[0, 0].numpy()


def _balls(points: np.ndarray, lo: np.ndarray, scale: np.ndarray, roi: Sequence[int]) -> np.ndarray:
    """Balls of :data:`POINT_RADIUS` ROI voxels at voxel centres ``points`` mapped into the ROI."""
    out = np.zeros(tuple(roi), np.float32)
    if len(points) == 0:
        return out
    centres = (points - lo + 0.5) * scale - 0.5
    r = POINT_RADIUS
    for c in centres:
        a = np.maximum(np.floor(c - r), 0).astype(int)
        b = np.minimum(np.ceil(c + r) + 1, roi).astype(int)
        if (b <= a).any():
            continue
        grid = np.stack(np.meshgrid(*[np.arange(a[d], b[d]) for d in range(3)], indexing="ij"), -1)
        inside = ((grid - c) ** 2).sum(-1) <= r * r
        out[a[0]:b[0], a[1]:b[1], a[2]:b[2]][inside] = 1.0
    return out


def _rasterise(prompts: Sequence[Prompt], lo: np.ndarray, hi: np.ndarray, out: np.ndarray) -> None:
    """Mark the voxels of region-like prompts (scribbles, lassos, boxes) in ``out``, the zeroed crop ``[lo, hi)``."""
    for p in prompts:
        if p.box is not None:
            a = np.clip(np.asarray(p.box[0]) - lo, 0, hi - lo)
            b = np.clip(np.asarray(p.box[1]) - lo, 0, hi - lo)
            out[a[0]:b[0], a[1]:b[1], a[2]:b[2]] = 1.0
        elif len(p.voxels):
            v = p.voxels - lo
            keep = ((v >= 0) & (v < hi - lo)).all(1)
            v = v[keep]
            out[v[:, 0], v[:, 1], v[:, 2]] = 1.0


def encode(image: np.ndarray, mask: np.ndarray | None, prompts: Sequence[Prompt], lo: np.ndarray, hi: np.ndarray,
           roi: Sequence[int]) -> np.ndarray:
    """Network input ``(len(CHANNELS), *roi)`` float32 for the crop ``[lo, hi)``.

    ``image`` is the normalised full volume (:func:`normalise_volume`), ``mask`` the current
    full-volume mask (or None). Only the crop is copied; nothing of the full volume is. Every
    channel made at the crop's resolution (image, mask, scribbles, regions) goes to the ROI in
    one interpolation.
    """
    lo, hi = np.asarray(lo), np.asarray(hi)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    scale = np.asarray(roi, np.float64) / (hi - lo)
    strokes = {index: [p for p in prompts if p.positive == positive and p.kind == "scribble"]
               for index, positive in ((2, True), (3, False))}
    regions = [p for p in prompts if p.positive and p.kind in ("box", "lasso")]
    at_crop = [0] + [1] * (mask is not None) + [i for i in (2, 3) if strokes[i]] + [4] * bool(regions)
    crop = np.empty((len(at_crop), *(int(b - a) for a, b in zip(lo, hi))), np.float32)
    crop[0] = image[sl]
    if mask is not None:
        crop[1] = mask[sl]
    for row, index in enumerate(at_crop):
        if index >= 2:
            crop[row] = 0.0
            _rasterise(strokes[index] if index < 4 else regions, lo, hi, crop[row])
    resampled = _resample(crop, roi, "trilinear")
    channels = np.zeros((len(CHANNELS), *roi), np.float32)
    channels[at_crop] = resampled
    for index, positive in ((2, True), (3, False)):
        clicks = [p.voxels for p in prompts if p.positive == positive and p.kind in ("point", "extreme_points")]
        if clicks:
            channels[index] = np.maximum(channels[index], _balls(np.concatenate(clicks), lo, scale, roi))
    return channels


def to_crop(logits: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Foreground (bool) at the crop's shape from ROI logits ``(*roi)`` of the object channel."""
    return _resample(logits, tuple(int(x) for x in np.asarray(hi) - np.asarray(lo)), "trilinear") > 0


def touches_border(crop_mask: np.ndarray, lo: np.ndarray, hi: np.ndarray, shape: Sequence[int]) -> bool:
    """Whether a crop's foreground reaches a crop face that is not the volume's own face (zoom out then)."""
    for axis in range(3):
        size = crop_mask.shape[axis]
        if lo[axis] > 0 and np.take(crop_mask, 0, axis=axis).any():
            return True
        if hi[axis] < shape[axis] and np.take(crop_mask, size - 1, axis=axis).any():
            return True
    return False
