"""The array codec of nnInteractive's protocol: a small header, then blosc2-compressed chunks.

Layout (little-endian): ``b"NNIA"``, version ``1``, codec id (1 ZSTD, 2 LZ4), ndim, dtype-name length,
the dtype name (``"uint8"``, ``"float32"``, ...), ``ndim`` int64 dimensions, a uint32 chunk count, then per
chunk its uncompressed and compressed lengths (uint64 each) and the blosc2 frame.

:func:`unpack` checks everything a body declares (dtype, shape, the size it would decompress to, every
chunk's frame header) before a single byte is decompressed, so a small body cannot claim gigabytes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import blosc2
import numpy as np

from server.errors import BadRequest, PayloadTooLarge

__all__ = ["pack", "unpack"]

MAGIC = b"NNIA"
VERSION = 1
CODECS = {1: blosc2.Codec.ZSTD, 2: blosc2.Codec.LZ4}
CHUNK_BYTES = 1 << 30  # blosc2 takes at most 2 GiB per call
DTYPES = frozenset({"bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
                    "float16", "float32", "float64"})
_HEAD = struct.Struct("<4sBBBB")
_CHUNK = struct.Struct("<QQ")


def pack(array: np.ndarray, clevel: int = 3) -> bytes:
    """Encode an array (ZSTD, no filter: masks compress best that way)."""
    array = np.ascontiguousarray(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    name = array.dtype.name.encode("ascii")
    raw = memoryview(array).cast("B") if array.size else memoryview(b"")
    # typesize = itemsize keeps every chunk a whole number of items (an all-zero buffer whose length is
    # not a multiple of typesize makes a frame blosc2 cannot read back).
    chunks = [blosc2.compress2(raw[i:i + CHUNK_BYTES], typesize=array.dtype.itemsize, codec=blosc2.Codec.ZSTD,
                               clevel=clevel, filters=[blosc2.Filter.NOFILTER])
              for i in range(0, raw.nbytes, CHUNK_BYTES)]
    parts = [_HEAD.pack(MAGIC, VERSION, 1, array.ndim, len(name)), name,
             struct.pack(f"<{array.ndim}q", *array.shape), struct.pack("<I", len(chunks))]
    for i, chunk in enumerate(chunks):
        parts += [_CHUNK.pack(min(CHUNK_BYTES, raw.nbytes - i * CHUNK_BYTES), len(chunk)), chunk]
    return b"".join(parts)


def _header(buf: bytes) -> tuple[np.dtype, tuple[int, ...], int]:
    if len(buf) < _HEAD.size:
        raise BadRequest("array body too short for the NNIA header")
    magic, version, codec, ndim, name_len = _HEAD.unpack_from(buf, 0)
    if magic != MAGIC:
        raise BadRequest(f"array body does not start with {MAGIC!r}: not an nnInteractive array")
    if version != VERSION or codec not in CODECS:
        raise BadRequest(f"unsupported array encoding (version {version}, codec {codec})")
    offset = _HEAD.size
    name = buf[offset:offset + name_len].decode("ascii", "replace")
    if name not in DTYPES:
        raise BadRequest(f"unsupported array dtype {name!r}")
    offset += name_len
    if len(buf) < offset + 8 * ndim + 4:
        raise BadRequest("array body too short for its declared shape")
    shape = struct.unpack_from(f"<{ndim}q", buf, offset)
    if any(d <= 0 for d in shape):
        raise BadRequest(f"array shape {list(shape)} has an empty or negative axis")
    return np.dtype(name), tuple(int(d) for d in shape), offset + 8 * ndim


def unpack(buf: bytes, *, max_elements: int, ndim: int | None = None, shape: Sequence[int] | None = None) -> np.ndarray:
    """Decode a body; its declared dtype, shape and sizes are checked before anything is decompressed.

    Raises:
        BadRequest: malformed, or not ``ndim``-dimensional / not of ``shape``.
        PayloadTooLarge: it declares more than ``max_elements`` elements.
    """
    dtype, declared, offset = _header(buf)
    if ndim is not None and len(declared) != ndim:
        raise BadRequest(f"expected a {ndim}D array, got shape {list(declared)}")
    if shape is not None and declared != tuple(int(s) for s in shape):
        raise BadRequest(f"array shape {list(declared)} differs from the expected {[int(s) for s in shape]}")
    elements = int(np.prod(declared, dtype=np.float64))
    if elements > max_elements:
        raise PayloadTooLarge(f"array of shape {list(declared)} declares {elements} elements; the limit is {max_elements}")
    total = elements * dtype.itemsize
    (nchunks,) = struct.unpack_from("<I", buf, offset)
    offset += 4
    frames, written = [], 0
    for _ in range(nchunks):  # validate every chunk first: no decompression until all is known good
        if len(buf) < offset + _CHUNK.size:
            raise BadRequest("array body truncated in a chunk header")
        ulen, clen = _CHUNK.unpack_from(buf, offset)
        offset += _CHUNK.size
        if clen > len(buf) - offset or ulen % dtype.itemsize or written + ulen > total:
            raise BadRequest("array chunk lengths are inconsistent with the declared shape and the body")
        frame = memoryview(buf)[offset:offset + clen]
        try:
            nbytes, cbytes, _ = blosc2.get_cbuffer_sizes(frame)
        except (ValueError, RuntimeError) as exc:  # what blosc2 raises on garbage
            raise BadRequest(f"array chunk is not a blosc2 frame: {exc}") from None
        if nbytes != ulen or cbytes != clen:
            raise BadRequest(f"array chunk declares {ulen} bytes but its frame holds {nbytes}")
        frames.append((written, ulen, frame))
        written += ulen
        offset += clen
    if written != total or offset != len(buf):
        raise BadRequest(f"array body holds {written} of {total} declared bytes"
                         + ("" if offset == len(buf) else " and trailing data"))
    out = np.empty(elements, dtype=dtype)
    raw = out.view(np.uint8)
    for start, ulen, frame in frames:
        try:
            blosc2.decompress2(frame, dst=raw[start:start + ulen])
        except (ValueError, RuntimeError) as exc:
            raise BadRequest(f"array chunk does not decompress: {exc}") from None
    return out.reshape(declared)
