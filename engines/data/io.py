"""Reading and writing medical images (SimpleITK), in NIfTI voxel order.

Arrays are indexed ``[i, j, k]`` (i fastest in the file), the order of NIfTI/ITK
indices that the AIAA clients use for points. SimpleITK's own arrays are ``[k, j, i]``;
the transposition happens here and nowhere else.
"""

from __future__ import annotations

import io
import math
import os
import re
import tempfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from engines.data.dicom import check_dicom_slices
from engines.errors import InputTooLargeError, InvalidImageError

__all__ = [
    "Geometry",
    "fortran_order",
    "Volume",
    "SUFFIXES",
    "DICOM_SUFFIX",
    "detect_suffix",
    "read_dicom_series",
    "check_geometry",
    "check_inline_data",
    "check_image_file",
    "read_modalities",
    "same_grid",
    "read_volume",
    "write_volume",
    "write_atomically",
    "write_volume_file",
]

# Formats accepted from uploads and written as results. DICOM is read (one file or a
# series of files) but never written: a mask for a DICOM input comes back as NIfTI.
SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".png")
DICOM_SUFFIX = ".dcm"


@dataclass(frozen=True)
class Geometry:
    """Physical placement of a voxel grid: spacing (mm), origin and direction cosines."""

    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @classmethod
    def identity(cls, ndim: int = 3) -> Geometry:
        """Unit spacing, zero origin, identity direction."""
        return cls((1.0,) * ndim, (0.0,) * ndim, tuple(np.eye(ndim).ravel().tolist()))


@dataclass
class Volume:
    """An image array in ``[i, j, k]`` order (``[i, j, k, c]`` for several channels) with its geometry."""

    array: np.ndarray
    geometry: Geometry

    @property
    def shape(self) -> tuple[int, ...]:
        """Voxel counts per axis, in ``[i, j, k]`` order."""
        return tuple(self.array.shape)

    @property
    def nbytes(self) -> int:
        """Memory held by the voxel data."""
        return int(self.array.nbytes)


def detect_suffix(filename: str | None, head: bytes = b"") -> str:
    """Choose the file format from the file name's suffix, else from magic bytes.

    Only the base name of ``filename`` is looked at (clients send full local paths).
    """
    name = os.path.basename((filename or "").replace("\\", "/")).lower()
    for suffix in SUFFIXES + (DICOM_SUFFIX,):
        if name.endswith(suffix):
            return suffix
    if head[128:132] == b"DICM":  # DICOM Part 10 preamble + prefix
        return DICOM_SUFFIX
    if name.endswith(".gz") or head[:2] == b"\x1f\x8b":
        return ".nii.gz"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if head[:4] == b"NRRD":
        return ".nrrd"
    if head[:4] in (b"\x5c\x01\x00\x00", b"\x00\x00\x01\x5c"):  # NIfTI-1 sizeof_hdr 348
        return ".nii"
    if head.startswith(b"ObjectType") or b"ElementDataFile" in head[:1024]:
        return ".mha"
    raise InvalidImageError(
        f"cannot tell the image format of {name or 'the upload'!r}: "
        f"send one of {', '.join(SUFFIXES + (DICOM_SUFFIX,))}"
    )


def read_volume(
    source: bytes | str | Path,
    filename: str | None = None,
    *,
    max_voxels: int | None = None,
) -> Volume:
    """Decode an image from bytes or a path into a :class:`Volume`.

    The header is read first, so an oversized image (``max_voxels``) is refused
    before any voxel is decoded.

    Raises:
        InvalidImageError: unreadable, corrupt, multi-component or empty image.
        InputTooLargeError: more voxels than ``max_voxels``.
    """
    if isinstance(source, (str, Path)):
        return _read_path(str(source), max_voxels)
    if not source:
        raise InvalidImageError("the uploaded image is empty")
    suffix = detect_suffix(filename, source[:1024])
    if suffix == DICOM_SUFFIX:
        return read_dicom_series([source], max_voxels=max_voxels)
    if suffix in (".nii.gz", ".nii"):
        # SimpleITK silently zero-fills truncated NIfTI data: check completeness ourselves,
        # decompressing at most what the header announces (no gzip bombs).
        source = _complete_nifti(source, gzipped=suffix == ".nii.gz", max_voxels=max_voxels)
        suffix = ".nii"
    else:
        check_inline_data(source)
    with tempfile.TemporaryDirectory(prefix="aiaa-") as tmp:
        path = os.path.join(tmp, "upload" + suffix)
        with open(path, "wb") as fh:
            fh.write(source)
        return _read_path(path, max_voxels)


def read_dicom_series(files: Sequence[bytes], *, max_voxels: int | None = None) -> Volume:
    """Decode the files of one DICOM series (one instance each, any order) into a :class:`Volume`.

    GDCM sorts the slices by position; the geometry comes from the DICOM headers.

    Raises:
        InvalidImageError: no DICOM image among the files, several series, files that are
            not slices of the series, or unreadable pixel data.
        InputTooLargeError: more voxels than ``max_voxels``.
    """
    if not files or not all(files):
        raise InvalidImageError("a DICOM series upload holds an empty file")
    with tempfile.TemporaryDirectory(prefix="aiaa-dicom-") as tmp:
        for index, data in enumerate(files):
            with open(os.path.join(tmp, f"{index:06d}.dcm"), "wb") as fh:
                fh.write(data)
        series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(tmp)
        if not series:
            raise InvalidImageError(f"none of the {len(files)} uploaded files is a readable DICOM image")
        if len(series) > 1:
            raise InvalidImageError(f"the upload holds {len(series)} DICOM series; send the files of one series")
        names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(tmp, series[0])
        if len(names) != len(files):
            raise InvalidImageError(
                f"{len(files) - len(names)} of the {len(files)} uploaded files are not slices of the DICOM series"
            )
        check_dicom_slices(names)
        info = _read_information(names[0])
        voxels = int(np.prod(info.GetSize()[:2], dtype=np.int64)) * len(names)
        if max_voxels is not None and voxels > max_voxels:
            raise InputTooLargeError(f"DICOM series has {voxels} voxels; the limit is {max_voxels}")
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(names)
        try:
            image = reader.Execute()
        except RuntimeError as exc:
            raise InvalidImageError(f"unreadable DICOM series: {_first_line(exc)}") from None
    check_geometry(image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InvalidImageError("the DICOM series is not a scalar (greyscale) image")
    return _to_volume(image)


# A MetaImage header names where its voxels are: only LOCAL (right after the header) is read from uploads.
_META_DATA_FILE = re.compile(rb"^[ \t]*ElementDataFile[ \t]*=[ \t]*([^\r\n]*)", re.IGNORECASE | re.MULTILINE)
# An NRRD header may point at detached data ("data file: ..."); uploads must carry their data inline.
_NRRD_DATA_FILE = re.compile(rb"^[ \t]*data ?file[ \t]*:", re.IGNORECASE | re.MULTILINE)


def check_inline_data(data: bytes) -> None:
    """Refuse an uploaded MetaImage or NRRD whose header points at another file (only inline data is read).

    Otherwise ``ElementDataFile = /etc/passwd`` or ``data file: /dev/zero`` would make the
    server read its own files into a session.

    Raises:
        InvalidImageError: the header names a data file.
    """
    head = data[:65536]
    if head.startswith(b"NRRD"):
        header = re.split(rb"\r?\n\r?\n", head, maxsplit=1)[0]
        if _NRRD_DATA_FILE.search(header):
            raise InvalidImageError("the NRRD header names a separate data file; upload the image with its "
                                    "data inline (a single .nrrd file)")
    match = _META_DATA_FILE.search(head)
    if match and match.group(1).strip().upper() != b"LOCAL":
        raise InvalidImageError("the MetaImage header names a separate data file (ElementDataFile is not LOCAL); "
                                "upload the image with its data inline (a single .mha file)")


def check_geometry(spacing: Sequence[float], origin: Sequence[float], direction: Sequence[float]) -> None:
    """Refuse a grid with non-finite or non-positive spacing, or a non-finite origin or direction.

    Raises:
        InvalidImageError: the geometry cannot place voxels in space.
    """
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise InvalidImageError(f"the image spacing {list(spacing)} is not finite and positive")
    if not all(math.isfinite(v) for v in (*origin, *direction)):
        raise InvalidImageError("the image origin or direction (affine) holds NaN or infinite values")


def check_image_file(path: str | Path) -> tuple[int, ...]:
    """Read only the header of an image file (one DICOM slice counts) and return its size.

    Raises:
        InvalidImageError: not a readable image, data in another file, or non-finite geometry.
    """
    path = str(path)
    if path.lower().endswith((".mha", ".nrrd")):
        with open(path, "rb") as fh:
            check_inline_data(fh.read(65536))
    reader = _read_information(path)
    check_geometry(reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())
    return tuple(reader.GetSize())


def _read_information(path: str) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InvalidImageError(f"not a readable image: {_first_line(exc)}") from None
    return reader


def _nifti_sizes(head: bytes) -> tuple[int, int]:
    """(voxel count, total file bytes) announced by a NIfTI-1/2 header."""
    import nibabel

    size_le = int.from_bytes(head[:4], "little")
    size_be = int.from_bytes(head[:4], "big")
    header_cls = nibabel.Nifti2Header if 540 in (size_le, size_be) else nibabel.Nifti1Header
    try:
        header = header_cls.from_fileobj(io.BytesIO(head))
        shape = header.get_data_shape()
        voxels = int(np.prod(shape, dtype=np.int64))
        return voxels, int(header["vox_offset"]) + voxels * int(header["bitpix"]) // 8
    except Exception as exc:
        raise InvalidImageError(f"not a readable NIfTI image: {exc}") from None


def _complete_nifti(data: bytes, gzipped: bool, max_voxels: int | None) -> bytes:
    if not gzipped:
        head = data[:544]
    else:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            head = inflater.decompress(data, 544)
        except zlib.error as exc:
            raise InvalidImageError(f"corrupt gzip data: {exc}") from None
    if len(head) < 348:
        raise InvalidImageError("truncated image: the NIfTI header is incomplete")
    voxels, expected = _nifti_sizes(head)
    if max_voxels is not None and voxels > max_voxels:
        raise InputTooLargeError(f"image has {voxels} voxels; the limit is {max_voxels}")
    if gzipped:
        parts, total = [head], len(head)
        try:
            while total < expected:
                chunk = inflater.decompress(inflater.unconsumed_tail or b"", min(expected - total, 1 << 26))
                if not chunk:
                    break
                parts.append(chunk)
                total += len(chunk)
        except zlib.error as exc:
            raise InvalidImageError(f"corrupt gzip data: {exc}") from None
        data = b"".join(parts)
    if len(data) < expected:
        raise InvalidImageError(
            f"truncated image: {len(data)} bytes of the {expected} its header announces"
        )
    return data


def _read_path(path: str, max_voxels: int | None) -> Volume:
    reader = _read_information(path)
    size = reader.GetSize()
    if reader.GetNumberOfComponents() != 1:
        raise InvalidImageError(
            f"image has {reader.GetNumberOfComponents()} components per voxel; a scalar image is required"
        )
    check_geometry(reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())
    voxels = int(np.prod(size, dtype=np.int64))
    if voxels == 0:
        raise InvalidImageError(f"image has no voxels (size {list(size)})")
    if max_voxels is not None and voxels > max_voxels:
        raise InputTooLargeError(
            f"image has {voxels} voxels (size {list(size)}); the limit is {max_voxels}"
        )
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InvalidImageError(f"corrupt or truncated image: {_first_line(exc)}") from None
    return _to_volume(image)


def _to_volume(image: sitk.Image) -> Volume:
    # A view of SimpleITK's buffer, copied once into [i, j, k] order: two copies of the voxels at
    # most while decoding (GetArrayFromImage + ascontiguousarray made three).
    array = sitk.GetArrayViewFromImage(image).transpose()  # [k, j, i] -> [i, j, k]
    ndim = image.GetDimension()
    spatial = min(ndim, 3)  # a 4D image is channels (modalities) on a 3D grid: keep the grid's geometry
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(ndim, ndim)[:spatial, :spatial]
    geometry = Geometry(
        tuple(float(s) for s in image.GetSpacing()[:spatial]),
        tuple(float(o) for o in image.GetOrigin()[:spatial]),
        tuple(float(d) for d in direction.ravel()),
    )
    return Volume(np.array(array, order="C"), geometry)  # always a copy: the view dies with the image


def read_modalities(paths: str | Path | Sequence[str | Path]) -> Volume:
    """One image file, or several co-registered ones stacked as channels ``[i, j, k, c]`` in order.

    Raises:
        InvalidImageError: unreadable file, or images on different voxel grids.
    """
    if isinstance(paths, (str, Path)):
        return read_volume(paths)
    volumes = [read_volume(p) for p in paths]
    if not volumes:
        raise InvalidImageError("an image list is empty")
    if len(volumes) == 1:
        return volumes[0]
    first = volumes[0]
    for path, volume in zip(paths, volumes):
        if volume.array.ndim != 3 or volume.shape != first.shape or not same_grid(volume.geometry, first.geometry):
            raise InvalidImageError(
                f"{path}: size {list(volume.shape)} spacing {list(volume.geometry.spacing)} does not match "
                f"{paths[0]} ({list(first.shape)}, {list(first.geometry.spacing)}): modalities must share one grid"
            )
    array = np.stack([np.asarray(v.array, dtype=np.float32) for v in volumes], axis=-1)
    return Volume(array, first.geometry)


def same_grid(a: Geometry, b: Geometry, tolerance: float = 1e-4) -> bool:
    """Whether two geometries place voxels at the same points (within ``tolerance`` mm)."""
    return all(
        len(x) == len(y) and np.allclose(x, y, atol=tolerance)
        for x, y in ((a.spacing, b.spacing), (a.origin, b.origin), (a.direction, b.direction))
    )


def fortran_order(array: np.ndarray, dtype: str | np.dtype | None = None) -> np.ndarray:
    """``np.ascontiguousarray(array.astype(dtype).transpose())``: the voxels ``i`` fastest, as NIfTI stores them.

    A large 3D array is copied in slabs of a few ``j`` rows, so the strided reads stay in the cache:
    about twice as fast as one transposing copy of a whole volume, and no intermediate ``astype`` copy.
    """
    array = np.asarray(array)
    dtype = array.dtype if dtype is None else np.dtype(dtype)
    if array.ndim != 3 or array.size < _SLABS_FROM:
        return np.ascontiguousarray(array.astype(dtype, copy=False).transpose())
    out = np.empty(array.shape[::-1], dtype)
    for j in range(0, array.shape[1], _SLAB):
        out[:, j:j + _SLAB] = array[:, j:j + _SLAB].transpose()
    return out


_SLAB = 4  # j rows per slab of fortran_order (measured on volumes of 10-155 slices)
_SLABS_FROM = 1 << 21  # voxels; below this one transposing copy is as fast


def write_volume(
    array: np.ndarray,
    geometry: Geometry,
    suffix: str = ".nii.gz",
    *,
    dtype: str | np.dtype = np.uint8,
    compress: bool | None = None,
) -> bytes:
    """Encode an ``[i, j, k]`` array with the given geometry as file bytes.

    ``compress`` defaults to what the suffix implies (``.nii.gz`` compressed,
    ``.nii`` not, NRRD/MHA not); ``compress=True`` with ``.nii`` writes ``.nii.gz``.
    """
    if suffix not in SUFFIXES:
        raise InvalidImageError(f"cannot write {suffix!r}: choose one of {', '.join(SUFFIXES)}")
    if compress and suffix == ".nii":
        suffix = ".nii.gz"
    use_compression = suffix == ".nii.gz" if compress is None else bool(compress)
    image = sitk.GetImageFromArray(fortran_order(array, dtype))
    if len(geometry.spacing) == image.GetDimension():
        image.SetSpacing(geometry.spacing)
        image.SetOrigin(geometry.origin)
        image.SetDirection(geometry.direction)
    with tempfile.TemporaryDirectory(prefix="aiaa-") as tmp:
        path = os.path.join(tmp, "result" + suffix)
        sitk.WriteImage(image, path, use_compression)
        with open(path, "rb") as fh:
            return fh.read()


def write_volume_file(volume: Volume, path: str | Path, *, dtype: str | np.dtype | None = None) -> Path:
    """Write a volume to ``path`` (format from its suffix) atomically: a temporary name, then a rename.

    ``dtype`` defaults to the array's own. An interrupted write never leaves a partial file at ``path``.
    """
    path = Path(path)
    suffix = next((s for s in SUFFIXES if path.name.lower().endswith(s)), None)
    if suffix is None or suffix == ".png":
        raise InvalidImageError(f"cannot write {path.name!r}: name it .nii.gz, .nii, .nrrd or .mha")
    data = write_volume(volume.array, volume.geometry, suffix, dtype=dtype or volume.array.dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda tmp: Path(tmp).write_bytes(data))
    return path


def write_atomically(path: str | Path, write: Callable[[str], object], suffix: str = ".part") -> None:
    """Call ``write(tmp)`` for a temporary file beside ``path``, then rename it onto ``path``.

    The project's one atomic write. An interrupted write never leaves a partial file at ``path``
    (nor a temporary one beside it); the temporary name is unique, so writers in several processes
    never share (and clobber) one.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp's files are private; an output is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # ITK messages start with a file/line prefix; the description is the useful part.
    for line in lines:
        if line.lower().startswith("description:"):
            return line.split(":", 1)[1].strip()
    return lines[-1] if lines else type(exc).__name__
