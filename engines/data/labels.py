"""Label maps from binary masks: what ``c3d ... -replace ... -add`` did by hand for BraTS regions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engines.data.io import Volume, read_volume, same_grid
from engines.errors import InvalidInputError

__all__ = ["merge_masks", "read_mask"]


def read_mask(spec: str | Path) -> Volume:
    """A binary mask from ``FILE`` (every non-zero voxel) or ``FILE:v1,v2,...`` (those values of a label map).

    ``OTMultiClass.nii.gz:1,3,4`` is the BraTS 2013 tumour core, for example.
    """
    text = str(spec)
    path, values = text, None
    head, sep, tail = text.rpartition(":")
    if sep and head and tail and all(part.strip().lstrip("-").isdigit() for part in tail.split(",")):
        path, values = head, [int(part) for part in tail.split(",")]
    volume = read_volume(path)
    if volume.array.ndim != 3:
        raise InvalidInputError(f"{path}: a 3D mask is required, got size {list(volume.shape)}")
    labels = np.rint(volume.array).astype(np.int64)
    mask = np.isin(labels, values) if values is not None else labels != 0
    return Volume(mask.astype(np.uint8), volume.geometry)


def merge_masks(masks: Sequence[Volume], values: Sequence[int] | None = None,
                names: Sequence[str] | None = None) -> Volume:
    """One label map from binary masks: mask n gets ``values[n]`` (default n + 1), later masks win.

    ``merge_masks([WT, TC, ET])`` gives 1 = edema (WT only), 2 = core without ET, 3 = ET.

    Raises:
        InvalidInputError: no masks, a wrong number of values, or masks on different grids.
    """
    if not masks:
        raise InvalidInputError("give at least one mask to merge")
    names = list(names) if names is not None else [f"mask {n + 1}" for n in range(len(masks))]
    values = list(values) if values is not None else list(range(1, len(masks) + 1))
    if len(values) != len(masks):
        raise InvalidInputError(f"{len(values)} values for {len(masks)} masks: give one value per mask")
    if any(not 0 <= v <= 65535 for v in values):
        raise InvalidInputError(f"label values must be between 0 and 65535, got {values}")
    first = masks[0]
    for name, mask in zip(names, masks):
        if mask.shape != first.shape or not same_grid(mask.geometry, first.geometry):
            raise InvalidInputError(
                f"{name} (size {list(mask.shape)}, spacing {list(mask.geometry.spacing)}, origin "
                f"{list(mask.geometry.origin)}) is not on the grid of {names[0]} (size {list(first.shape)}, "
                f"spacing {list(first.geometry.spacing)}, origin {list(first.geometry.origin)}); resample it first"
            )
    dtype = np.uint8 if max(values) <= 255 else np.uint16
    merged = np.zeros(first.shape, dtype)
    for mask, value in zip(masks, values):
        merged[np.asarray(mask.array) != 0] = value
    return Volume(merged, first.geometry)
