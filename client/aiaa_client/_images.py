"""What the caller passes as ``image`` becomes an upload; client-side crop around extreme points.

``image`` may be a file path (a DICOM series folder is sent as ``image0..N``, as OHIF does),
the bytes of a file, a numpy array (indexed ``[i, j, k]``, with ``affine=`` voxel-to-RAS,
identity when omitted) or a nibabel image.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aiaa_client._nifti import is_nifti, read_nifti, write_nifti

__all__ = ["Crop", "Upload", "crop_around", "image_array", "make_upload"]

ImageLike = Any  # str | os.PathLike | bytes | np.ndarray | nibabel image


@dataclass(frozen=True)
class Upload:
    """An encoded image ready to send: one file, or a DICOM series (one file per instance)."""

    filename: str
    data: bytes = b""
    series: tuple[bytes, ...] = field(default_factory=tuple)

    def parts(self) -> list[tuple[str, str, bytes]]:
        """Multipart file parts ``(field, filename, bytes)``: ``image``, or ``image0..N`` for a series."""
        if self.series:
            return [(f"image{i}", f"{i}.dcm", data) for i, data in enumerate(self.series)]
        return [("image", self.filename, self.data)]


def _is_nibabel(image: Any) -> bool:
    return hasattr(image, "affine") and hasattr(image, "dataobj") and hasattr(image, "header")


def _guess_name(data: bytes) -> str:
    if data[:2] == b"\x1f\x8b":
        return "image.nii.gz"
    if data[:4] == b"NRRD":
        return "image.nrrd"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image.png"
    return "image.nii"


def make_upload(image: ImageLike, affine: Any = None, filename: str | None = None) -> Upload:
    """Encode ``image`` for upload (arrays become gzipped NIfTI-1 with ``affine``).

    Raises:
        ValueError: an unsupported image type; FileNotFoundError: a missing path.
    """
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file())
            if not files:
                raise ValueError(f"{path} is an empty folder")
            return Upload(path.name, series=tuple(p.read_bytes() for p in files))
        return Upload(filename or path.name, path.read_bytes())
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        return Upload(filename or _guess_name(data), data)
    if isinstance(image, np.ndarray):
        return Upload(filename or "image.nii.gz", write_nifti(image, affine))
    if _is_nibabel(image):
        return Upload(filename or "image.nii.gz", write_nifti(np.asanyarray(image.dataobj), image.affine))
    raise ValueError(f"image must be a path, bytes, a numpy array or a nibabel image, not {type(image).__name__}")


def image_array(image: ImageLike, affine: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """``(array, affine)`` of ``image`` where the client can decode it (NIfTI, arrays, nibabel images).

    Raises:
        ValueError: a format the client cannot decode (send it whole, without client-side crop).
    """
    if isinstance(image, np.ndarray):
        return image, np.eye(4) if affine is None else np.asarray(affine, float)
    if _is_nibabel(image):
        return np.asanyarray(image.dataobj), np.asarray(image.affine, float)
    if isinstance(image, (str, os.PathLike)) and not Path(image).is_dir():
        image = Path(image).read_bytes()
    if isinstance(image, (bytes, bytearray, memoryview)) and is_nifti(bytes(image)):
        return read_nifti(bytes(image))
    raise ValueError("client-side crop needs a NIfTI file, a numpy array or a nibabel image")


@dataclass(frozen=True)
class Crop:
    """A box cut out of a volume: start index, the cropped volume's shape and the full volume's."""

    start: tuple[int, ...]
    shape: tuple[int, ...]
    full_shape: tuple[int, ...]
    full_affine: np.ndarray

    def shift_points(self, points: list[list[int]], sign: int = -1) -> list[list[int]]:
        """Points of the full volume in crop indices (``sign=-1``), or back (``sign=+1``)."""
        return [[int(p[d]) + sign * self.start[d] for d in range(3)] for p in points]

    def paste(self, mask: np.ndarray) -> np.ndarray:
        """The crop's mask placed into a zero volume of the full shape."""
        if tuple(mask.shape[:3]) != self.shape:
            raise ValueError(f"the server's mask has shape {mask.shape}, expected the crop's {self.shape}")
        full = np.zeros(self.full_shape, mask.dtype)
        full[tuple(slice(s, s + n) for s, n in zip(self.start, self.shape))] = mask
        return full


def crop_around(array: np.ndarray, affine: np.ndarray, points: list[list[int]],
                pad_mm: float) -> tuple[np.ndarray, np.ndarray, Crop]:
    """Cut the box around ``points`` plus ``pad_mm`` (as NVIDIA's clients do, without resampling).

    Returns the cropped array, its affine (same voxel size, shifted origin) and the :class:`Crop`.
    """
    pts = np.asarray(points, int)
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0:
        raise ValueError("points must be a list of [i, j, k] voxel indices")
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    pad = np.array([int(pad_mm / s) for s in spacing])
    size = np.asarray(array.shape[:3])
    low = np.clip(pts.min(0) - pad, 0, size - 1)
    high = np.clip(pts.max(0) + pad, 0, size - 1) + 1  # inclusive box: the points stay inside
    cropped = np.ascontiguousarray(array[low[0]:high[0], low[1]:high[1], low[2]:high[2]])
    shifted = np.asarray(affine, float).copy()
    shifted[:3, 3] = affine[:3, :3] @ low + affine[:3, 3]
    crop = Crop(tuple(int(v) for v in low), tuple(int(v) for v in high - low), tuple(array.shape),
                np.asarray(affine, float))
    return cropped, shifted, crop
