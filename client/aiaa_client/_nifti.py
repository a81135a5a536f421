"""A minimal NIfTI-1 reader and writer (numpy + gzip), so the base install needs no nibabel.

Covers what the annotation protocol exchanges: one 3D (or 2D/4D) volume with an affine,
plain or gzipped, either byte order. The affine is NIfTI's voxel-to-RAS matrix, as nibabel
reports it: the sform when set, else the qform, else the voxel sizes.
"""

from __future__ import annotations

import gzip
import struct
import zlib

import numpy as np

__all__ = ["is_nifti", "read_nifti", "write_nifti"]

HEADER_SIZE = 348
DATA_OFFSET = 352  # header + 4-byte extension flag
DTYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4", 1024: "i8", 1280: "u8"}
CODES = {np.dtype(v).str[1:]: k for k, v in DTYPES.items()}


def _raw(data: bytes) -> bytes:
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def is_nifti(data: bytes) -> bool:
    """Whether ``data`` (plain or gzipped) is a single-file NIfTI-1 image."""
    head = data[:HEADER_SIZE]
    if data[:2] == b"\x1f\x8b":
        try:
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, HEADER_SIZE)
        except zlib.error:
            return False
    return len(head) >= HEADER_SIZE and head[344:348] in (b"n+1\x00", b"ni1\x00")


def _quaternion_matrix(b: float, c: float, d: float) -> np.ndarray:
    a = np.sqrt(max(0.0, 1.0 - (b * b + c * c + d * d)))
    return np.array([
        [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
        [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
        [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b],
    ])


def read_nifti(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """``(array, affine)`` of a NIfTI-1 file; the array is indexed ``[i, j, k]`` like nibabel's.

    Raises:
        ValueError: not a single-file NIfTI-1 image, or an unsupported voxel type.
    """
    raw = _raw(data)
    if len(raw) < HEADER_SIZE or raw[344:348] not in (b"n+1\x00", b"ni1\x00"):
        raise ValueError("not a NIfTI-1 image")
    order = "<" if struct.unpack("<i", raw[:4])[0] == HEADER_SIZE else ">"
    dim = struct.unpack(order + "8h", raw[40:56])
    datatype = struct.unpack(order + "h", raw[70:72])[0]
    pixdim = struct.unpack(order + "8f", raw[76:108])
    vox_offset, slope, inter = struct.unpack(order + "3f", raw[108:120])
    qform_code, sform_code = struct.unpack(order + "2h", raw[252:256])
    quatern = struct.unpack(order + "6f", raw[256:280])
    srows = struct.unpack(order + "12f", raw[280:328])
    if datatype not in DTYPES:
        raise ValueError(f"NIfTI datatype {datatype} is not supported by the built-in reader (install nibabel)")
    shape = tuple(int(n) for n in dim[1:1 + dim[0]])
    count = int(np.prod(shape))
    array = np.frombuffer(raw, order + DTYPES[datatype], count=count, offset=int(vox_offset)).reshape(shape, order="F")
    array = array.astype(array.dtype.newbyteorder("="))
    if slope not in (0.0, 1.0) or inter != 0.0:
        array = array * slope + inter
    affine = np.eye(4)
    if sform_code > 0:
        affine[:3] = np.asarray(srows, float).reshape(3, 4)
    elif qform_code > 0:
        qfac = -1.0 if pixdim[0] < 0 else 1.0
        affine[:3, :3] = _quaternion_matrix(*quatern[:3]) * np.array([pixdim[1], pixdim[2], pixdim[3] * qfac])
        affine[:3, 3] = quatern[3:]
    else:
        affine[:3, :3] = np.diag([pixdim[i] or 1.0 for i in (1, 2, 3)])
    return array, affine


def _quaternion(rotation: np.ndarray) -> tuple[float, float, float]:
    """Quaternion ``(b, c, d)`` of a proper rotation (the algorithm of nifti1_io's mat44_to_quatern)."""
    r = rotation
    a = r[0, 0] + r[1, 1] + r[2, 2] + 1.0
    if a > 0.5:
        a = 0.5 * np.sqrt(a)
        b, c, d = 0.25 * (r[2, 1] - r[1, 2]) / a, 0.25 * (r[0, 2] - r[2, 0]) / a, 0.25 * (r[1, 0] - r[0, 1]) / a
    else:
        xd = 1.0 + r[0, 0] - (r[1, 1] + r[2, 2])
        yd = 1.0 + r[1, 1] - (r[0, 0] + r[2, 2])
        zd = 1.0 + r[2, 2] - (r[0, 0] + r[1, 1])
        if xd > 1.0:
            b = 0.5 * np.sqrt(xd)
            c, d, a = 0.25 * (r[0, 1] + r[1, 0]) / b, 0.25 * (r[0, 2] + r[2, 0]) / b, 0.25 * (r[2, 1] - r[1, 2]) / b
        elif yd > 1.0:
            c = 0.5 * np.sqrt(yd)
            b, d, a = 0.25 * (r[0, 1] + r[1, 0]) / c, 0.25 * (r[1, 2] + r[2, 1]) / c, 0.25 * (r[0, 2] - r[2, 0]) / c
        else:
            d = 0.5 * np.sqrt(zd)
            b, c, a = 0.25 * (r[0, 2] + r[2, 0]) / d, 0.25 * (r[1, 2] + r[2, 1]) / d, 0.25 * (r[1, 0] - r[0, 1]) / d
        if a < 0.0:
            b, c, d = -b, -c, -d
    return float(b), float(c), float(d)


def write_nifti(array: np.ndarray, affine: np.ndarray | None = None, compress: bool = True) -> bytes:
    """Encode ``array`` (indexed ``[i, j, k]``) with ``affine`` (voxel to RAS) as NIfTI-1 (gzipped by default).

    Both the sform and the qform are written, so every reader (nibabel, ITK, viewers) agrees.

    Raises:
        ValueError: an unsupported voxel type, or a singular affine.
    """
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    code = CODES.get(array.dtype.str[1:])
    if code is None:
        raise ValueError(f"cannot write voxels of type {array.dtype} as NIfTI")
    if not 1 <= array.ndim <= 7:
        raise ValueError(f"a NIfTI image has 1 to 7 dimensions, not {array.ndim}")
    affine = np.eye(4) if affine is None else np.asarray(affine, float)
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, not {affine.shape}")
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(zooms == 0):
        raise ValueError("affine is singular (a zero voxel size)")
    u, _, vt = np.linalg.svd(affine[:3, :3] / zooms)
    rotation = u @ vt  # nearest orthonormal matrix: the qform can only hold a rotation
    qfac = 1.0
    if np.linalg.det(rotation) < 0:
        qfac, rotation = -1.0, rotation * np.array([1.0, 1.0, -1.0])
    header = bytearray(DATA_OFFSET)
    dim = [array.ndim, *array.shape] + [1] * (7 - array.ndim)
    pixdim = [qfac, *zooms] + [1.0] * 4
    struct.pack_into("<i", header, 0, HEADER_SIZE)
    struct.pack_into("<8h", header, 40, *dim)
    struct.pack_into("<2h", header, 70, code, array.dtype.itemsize * 8)
    struct.pack_into("<8f", header, 76, *pixdim)
    struct.pack_into("<3f", header, 108, float(DATA_OFFSET), 1.0, 0.0)
    header[123] = 2  # xyzt_units: millimetres
    struct.pack_into("<2h", header, 252, 1, 1)  # qform_code, sform_code: scanner
    struct.pack_into("<6f", header, 256, *_quaternion(rotation), *affine[:3, 3])
    struct.pack_into("<12f", header, 280, *affine[:3].ravel())
    header[344:348] = b"n+1\x00"
    body = bytes(header) + np.asarray(array, array.dtype.newbyteorder("<")).tobytes(order="F")
    return gzip.compress(body, compresslevel=6, mtime=0) if compress else body
