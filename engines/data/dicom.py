"""Checks that the slices of one DICOM series form one regular volume, read from the headers only.

One implementation for ``aiaa convert`` and for uploads: refuse before any pixel is decoded
what would decode to the wrong geometry (missing or duplicate slices, mixed sizes or
orientations, non-finite positions) or to far more memory than the files hold (Rows/Columns
that the pixel data does not carry). Uncompressed pixel data must hold Rows x Columns x ... bytes;
compressed pixel data (JPEG, JPEG-LS, JPEG 2000, RLE) must describe frames of Rows x Columns in
its own headers (:mod:`engines.data.dicom_frames`), read without decoding a pixel.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from engines.data.dicom_frames import check_compressed_frame
from engines.errors import InvalidImageError

__all__ = ["check_dicom_slices"]

_TAG_POSITION, _TAG_ORIENTATION = "0020|0032", "0020|0037"
_TAG_ROWS, _TAG_COLUMNS = "0028|0010", "0028|0011"
_TAG_BITS, _TAG_SAMPLES, _TAG_FRAMES = "0028|0100", "0028|0002", "0028|0008"
# Transfer syntaxes whose pixel data is stored as is: its length must be Rows x Columns x ... bytes.
_UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}
_TRANSFER_SYNTAX_TAG = b"\x02\x00\x10\x00UI"  # (0002,0010), always explicit VR little endian


def _transfer_syntax(path: str) -> str:
    """The file meta header's transfer syntax UID; implicit VR little endian when there is no meta header."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    at = head.find(_TRANSFER_SYNTAX_TAG, 132) if head[128:132] == b"DICM" else -1
    if at < 0:
        return "1.2.840.10008.1.2"
    length = int.from_bytes(head[at + 6:at + 8], "little")
    return head[at + 8:at + 8 + length].rstrip(b"\x00 ").decode("ascii", errors="replace")


def _header_int(get, key: str, default: int) -> int:
    text = get(key)
    try:
        return int(text) if text else default
    except ValueError:
        raise InvalidImageError(f"tag {key} is not a number: {text[:32]!r}") from None


def _check_pixel_data_length(path: str, get) -> None:
    """Refuse a slice whose Rows x Columns (x frames, samples, bytes) exceed what the file holds."""
    rows, columns = _header_int(get, _TAG_ROWS, 0), _header_int(get, _TAG_COLUMNS, 0)
    if rows <= 0 or columns <= 0:
        raise InvalidImageError(f"{Path(path).name}: the slice has no valid Rows/Columns ({rows} x {columns})")
    samples, frames = _header_int(get, _TAG_SAMPLES, 1), _header_int(get, _TAG_FRAMES, 1)
    bytes_per_sample = math.ceil(_header_int(get, _TAG_BITS, 16) / 8)
    syntax = _transfer_syntax(path)
    if syntax not in _UNCOMPRESSED:
        check_compressed_frame(path, syntax, rows, columns, samples * bytes_per_sample, frames)
        return
    needed = rows * columns * samples * frames * bytes_per_sample
    size = os.path.getsize(path)
    if needed > size:
        raise InvalidImageError(
            f"{Path(path).name}: Rows x Columns ({rows} x {columns}) need {needed} bytes of pixel data; "
            f"the file holds only {size} bytes"
        )


def _floats(text: str, count: int, what: str, path: str) -> list[float]:
    try:
        values = [float(v) for v in text.split("\\")]
    except ValueError:
        values = []
    if len(values) != count or not all(math.isfinite(v) for v in values):
        raise InvalidImageError(f"{Path(path).name}: the slice has no valid {what}")
    return values


def check_dicom_slices(files: Sequence[str]) -> None:
    """Refuse a series whose slices do not form one regular volume.

    Raises:
        InvalidImageError: unreadable slice, Rows/Columns the pixel data does not hold, mixed slice
            sizes or orientations, a slice without a finite position, duplicate positions or a gap.
    """
    positions, sizes, orientations = [], set(), set()
    for path in files:
        reader = sitk.ImageFileReader()
        reader.SetFileName(path)
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            raise InvalidImageError(f"{path}: not a readable DICOM slice") from None
        get = lambda key: reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""
        _check_pixel_data_length(path, get)
        sizes.add((get(_TAG_ROWS), get(_TAG_COLUMNS)))
        orientations.add(get(_TAG_ORIENTATION))
        if len(files) > 1:
            positions.append(_floats(get(_TAG_POSITION), 3, "Image Position (Patient)", path))
    series = Path(files[0]).parent
    if len(sizes) > 1:
        raise InvalidImageError(f"{series}: the series mixes slice sizes {sorted(sizes)} (rows, columns)")
    if len(orientations) > 1:
        raise InvalidImageError(f"{series}: the series mixes slice orientations")
    if len(files) < 2:
        return
    cosines = np.asarray(_floats(orientations.pop(), 6, "Image Orientation (Patient)", files[0])).reshape(2, 3)
    normal = np.cross(cosines[0], cosines[1])
    if not np.linalg.norm(normal) > 1e-6:
        raise InvalidImageError(f"{series}: the Image Orientation (Patient) vectors are parallel or zero")
    order = np.argsort(np.asarray(positions) @ normal)
    heights = (np.asarray(positions) @ normal)[order]
    steps = np.diff(heights)
    step = float(np.median(steps))
    duplicates = np.flatnonzero(steps < max(1e-3, 1e-3 * step))
    if len(duplicates):
        n = int(duplicates[0])
        raise InvalidImageError(
            f"{series}: duplicate slices at the same position "
            f"({Path(files[order[n]]).name} and {Path(files[order[n + 1]]).name}, {heights[n]:.3f} mm along the normal)"
        )
    gaps = np.flatnonzero(steps > 1.5 * step)
    if len(gaps):
        n = int(gaps[0])
        missing = int(round(steps[n] / step)) - 1
        raise InvalidImageError(
            f"{series}: {missing} slice(s) missing between {Path(files[order[n]]).name} and "
            f"{Path(files[order[n + 1]]).name} ({steps[n]:.3f} mm apart, slices are {step:.3f} mm apart)"
        )
