"""Image conversion (``aiaa convert``, as Clara's ``tlt-dataconvert``): DICOM series or image files
to NIfTI/MHA, optionally resampled.

Every DICOM series under a folder is read with SimpleITK's GDCM series reader (slices
sorted by position) after checking that its slices are complete: no missing or duplicate
positions, one slice size. Geometry (origin, spacing, direction, oblique included) is
carried over unchanged; resampling keeps the physical extent of the volume. Outputs are
written under a temporary name and renamed, so a failure never leaves a partial file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from engines.data.dicom import check_dicom_slices
from engines.data.io import write_atomically
from engines.errors import InvalidImageError, InvalidInputError

__all__ = [
    "OUTPUT_SUFFIXES",
    "FILE_SUFFIXES",
    "ConvertResult",
    "Source",
    "check_dicom_slices",
    "convert",
    "find_sources",
    "resample",
]

OUTPUT_SUFFIXES = (".nii.gz", ".nii", ".mha")
FILE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd")
DICOM_SUFFIX = ".dcm"
_TAG_DESCRIPTION = "0008|103e"


@dataclass(frozen=True)
class Source:
    """One input volume: a DICOM series (its slice files) or one image file, and its output name."""

    name: str
    files: tuple[str, ...]
    dicom: bool


@dataclass(frozen=True)
class ConvertResult:
    """What happened to one source: ``written``, ``skipped`` (output exists) or ``failed``."""

    source: Source
    output: Path
    status: str
    message: str = ""


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "series"


def _dicom_sources(directory: Path) -> list[Source]:
    sources: list[Source] = []
    for folder, _, files in sorted(os.walk(directory)):
        if not files:  # DICOM files often have no suffix: GDCM tells which files are DICOM
            continue
        series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder)
        relative = Path(folder).relative_to(directory)
        base = "_".join(relative.parts) if relative.parts else directory.resolve().name
        for series_id in series_ids:
            names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, series_id)
            name = base
            if len(series_ids) > 1:  # several series in one folder: tell them apart by description
                description = _tag(names[0], _TAG_DESCRIPTION) or series_id[-8:]
                name = f"{base}_{description}"
            sources.append(Source(_safe(name), tuple(names), True))
    return sources


def find_sources(directory: str | Path, suffix: str = DICOM_SUFFIX) -> list[Source]:
    """Every DICOM series (``suffix`` ``.dcm``) or every image file with ``suffix`` under ``directory``.

    Raises:
        InvalidInputError: not a folder, or no image in it.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise InvalidInputError(f"{directory} is not a folder")
    suffix = suffix.lower() if suffix.startswith(".") else "." + suffix.lower()
    if suffix == DICOM_SUFFIX:
        sources = _dicom_sources(directory)
    elif suffix in FILE_SUFFIXES:
        files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name.lower().endswith(suffix))
        sources = [Source(_safe(p.name[: -len(suffix)]), (str(p),), False) for p in files]
    else:
        raise InvalidInputError(f"source suffix {suffix!r} is not supported: use .dcm or one of {', '.join(FILE_SUFFIXES)}")
    if not sources:
        raise InvalidInputError(f"no {'DICOM series' if suffix == DICOM_SUFFIX else suffix + ' image'} found under {directory}")
    names = [s.name for s in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidInputError(f"several inputs would be written as {', '.join(duplicates)}: rename them first")
    return sources


def _tag(path: str, key: str) -> str:
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""


def read_source(source: Source) -> sitk.Image:
    """Read one source as a SimpleITK image (a checked DICOM series, or the image file)."""
    try:
        if source.dicom:
            check_dicom_slices(source.files)
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(list(source.files))
            return reader.Execute()
        return sitk.ReadImage(source.files[0])
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise InvalidImageError(f"{source.files[0]}: unreadable image: {lines[-1] if lines else exc}") from None


def resample(image: sitk.Image, spacing: Sequence[float], label: bool = False) -> sitk.Image:
    """Resample to ``spacing`` (mm per axis) over the same physical extent, same direction.

    Linear interpolation for images, nearest neighbour for labels (values stay values).
    The first voxel's outer corner stays where it was; the size is the extent over the
    new spacing, rounded.
    """
    old_spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    new_spacing = np.asarray(spacing, dtype=np.float64)
    if new_spacing.shape != old_spacing.shape or np.any(new_spacing <= 0):
        raise InvalidInputError(f"resolution {list(spacing)} must be {len(old_spacing)} positive values")
    extent = np.asarray(image.GetSize()) * old_spacing
    size = np.maximum(1, np.round(extent / new_spacing)).astype(int)
    direction = np.asarray(image.GetDirection()).reshape(len(size), len(size))
    origin = np.asarray(image.GetOrigin()) + direction @ ((new_spacing - old_spacing) / 2)
    interpolator = sitk.sitkNearestNeighbor if label else sitk.sitkLinear
    return sitk.Resample(image, [int(s) for s in size], sitk.Transform(), interpolator, origin.tolist(),
                         new_spacing.tolist(), image.GetDirection(), 0, image.GetPixelID())


def write_image_atomic(image: sitk.Image, path: Path) -> None:
    """Write under a temporary name in the same folder, then rename onto ``path``."""
    suffix = next(s for s in OUTPUT_SUFFIXES if path.name.endswith(s))
    write_atomically(path, lambda tmp: sitk.WriteImage(image, tmp, suffix == ".nii.gz"), suffix=suffix)


def convert(
    directory: str | Path,
    output: str | Path,
    *,
    source_suffix: str = DICOM_SUFFIX,
    output_suffix: str = ".nii.gz",
    resolution: Sequence[float] | None = None,
    label: bool = False,
    force: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[ConvertResult]:
    """Convert every source under ``directory`` into ``output/<name><output_suffix>``.

    ``resolution``: one value (isotropic) or one per axis; ``None`` copies the voxels exactly.
    An existing output is skipped unless ``force``. A bad source is reported as ``failed``
    (the others still convert).

    Raises:
        InvalidInputError: bad arguments or no source under ``directory``.
    """
    if output_suffix not in OUTPUT_SUFFIXES:
        raise InvalidInputError(f"output suffix {output_suffix!r} is not supported: use one of {', '.join(OUTPUT_SUFFIXES)}")
    if resolution is not None and len(resolution) not in (1, 3):
        raise InvalidInputError(f"give one resolution (isotropic) or three (per axis), not {len(resolution)}")
    sources = find_sources(directory, source_suffix)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    results = []
    for n, source in enumerate(sources, 1):
        target = output / f"{source.name}{output_suffix}"
        if target.exists() and not force:
            results.append(ConvertResult(source, target, "skipped", "exists; -f overwrites"))
        else:
            try:
                image = read_source(source)
                if resolution is not None:
                    spacing = list(resolution) * image.GetDimension() if len(resolution) == 1 else list(resolution)
                    image = resample(image, spacing, label)
                write_image_atomic(image, target)
                results.append(ConvertResult(source, target, "written",
                                             f"size {list(image.GetSize())}, spacing "
                                             f"{[round(s, 4) for s in image.GetSpacing()]}"))
            except (InvalidImageError, InvalidInputError) as exc:
                results.append(ConvertResult(source, target, "failed", str(exc)))
        if progress:
            progress(n, len(sources), source.name)
    return results
