"""What the compressed pixel data of a DICOM file says about its frames, read without decoding it.

A file whose Rows/Columns claim far more than its compressed frames hold would make a decoder
allocate the claimed size (a 12 KB series once asked for 14 GB). The frames' own headers carry
their size: the JPEG and JPEG-LS start-of-frame marker, the JPEG 2000 SIZ marker, and for RLE the
decoded length of each byte segment (counted from the run headers, nothing is expanded).
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

from engines.errors import InvalidImageError

__all__ = ["check_compressed_frame", "frame_size"]

_PIXEL_DATA = b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff"  # (7FE0,0010) OB, undefined length: encapsulated
_ITEM, _END = b"\xfe\xff\x00\xe0", b"\xfe\xff\xdd\xe0"
_RLE = "1.2.840.10008.1.2.5"
_JPEG_2000 = ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.92",
              "1.2.840.10008.1.2.4.93", "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202",
              "1.2.840.10008.1.2.4.203")
_JPEG = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
         "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81")
# Start-of-frame markers: SOF0..SOF15 but DHT (C4), JPG (C8) and DAC (CC); F7 is JPEG-LS's SOF55.
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}


def _fragments(data: bytes, name: str) -> list[bytes]:
    """The fragments of the encapsulated pixel data, the basic offset table left out."""
    at = data.rfind(_PIXEL_DATA)
    if at < 0:
        raise InvalidImageError(f"{name}: compressed transfer syntax but no encapsulated pixel data")
    at += len(_PIXEL_DATA)
    items = []
    while data[at:at + 4] == _ITEM:
        length = int.from_bytes(data[at + 4:at + 8], "little")
        items.append(data[at + 8:at + 8 + length])
        at += 8 + length
    if data[at:at + 4] != _END or len(items) < 2:
        raise InvalidImageError(f"{name}: the encapsulated pixel data is truncated or malformed")
    return items[1:]


def _jpeg_size(frame: bytes) -> tuple[int, int] | None:
    """(rows, columns) of a JPEG or JPEG-LS codestream's start-of-frame marker."""
    at = 2 if frame[:2] == b"\xff\xd8" else -1
    while 0 <= at < len(frame) - 9:
        if frame[at] != 0xFF:
            return None
        marker = frame[at + 1]
        if marker in _SOF:
            return int.from_bytes(frame[at + 5:at + 7], "big"), int.from_bytes(frame[at + 7:at + 9], "big")
        at += 2 + int.from_bytes(frame[at + 2:at + 4], "big")
    return None


def _jpeg_2000_size(frame: bytes) -> tuple[int, int] | None:
    """(rows, columns) of a JPEG 2000 codestream's SIZ marker (raw codestream or inside a JP2 box)."""
    at = frame.find(b"\xff\x4f\xff\x51")
    if at < 0 or len(frame) < at + 24:
        return None
    x, y, x0, y0 = (int.from_bytes(frame[at + o:at + o + 4], "big") for o in (8, 12, 16, 20))
    return y - y0, x - x0


def _rle_lengths(frame: bytes) -> list[int]:
    """Decoded lengths of an RLE frame's byte segments, counted from the run headers."""
    if len(frame) < 64:
        return []
    count = int.from_bytes(frame[:4], "little")
    if not 1 <= count <= 15:
        return []
    offsets = [int.from_bytes(frame[4 + 4 * i:8 + 4 * i], "little") for i in range(count)] + [len(frame)]
    lengths = []
    for start, end in pairwise(offsets):
        decoded, at = 0, start
        while at < min(end, len(frame)):
            n = frame[at]
            if n < 128:  # a literal run of n + 1 bytes
                decoded, at = decoded + n + 1, at + n + 2
            elif n > 128:  # one byte repeated 257 - n times
                decoded, at = decoded + 257 - n, at + 2
            else:
                at += 1
        lengths.append(decoded)
    return lengths


def frame_size(syntax: str, frame: bytes) -> tuple[int, int] | None:
    """(rows, columns) that a JPEG, JPEG-LS or JPEG 2000 frame's own header gives; None for other syntaxes."""
    if syntax in _JPEG:
        return _jpeg_size(frame)
    if syntax in _JPEG_2000:
        return _jpeg_2000_size(frame)
    return None


def check_compressed_frame(path: str, syntax: str, rows: int, columns: int, bytes_per_pixel: int,
                           frames: int) -> None:
    """Refuse a compressed file whose frames are not Rows x Columns by their own headers.

    ``bytes_per_pixel`` is samples per pixel times bytes per sample (RLE's segment count).
    Transfer syntaxes other than JPEG, JPEG-LS, JPEG 2000 and RLE are left to the voxel limit.

    Raises:
        InvalidImageError: no frame header, a header of another size, fewer fragments than frames,
            or RLE segments that decode to fewer bytes than Rows x Columns.
    """
    if syntax not in _JPEG + _JPEG_2000 + (_RLE,):
        return
    name = Path(path).name
    fragments = _fragments(Path(path).read_bytes(), name)
    if len(fragments) < frames:
        raise InvalidImageError(f"{name}: {frames} frames announced, the pixel data holds {len(fragments)} fragments")
    first = fragments[0]
    if syntax == _RLE:
        lengths = _rle_lengths(first)
        if len(lengths) != bytes_per_pixel or min(lengths) < rows * columns:
            raise InvalidImageError(
                f"{name}: Rows x Columns ({rows} x {columns}) need {bytes_per_pixel} RLE segments of "
                f"{rows * columns} bytes each; the pixel data holds {len(lengths)} of {min(lengths, default=0)}")
        return
    size = frame_size(syntax, first)
    if size is None:
        raise InvalidImageError(f"{name}: the compressed pixel data has no readable frame header")
    if size != (rows, columns) and size[0] != 0:  # a JPEG height of 0 comes later (DNL marker)
        raise InvalidImageError(f"{name}: Rows x Columns ({rows} x {columns}) differ from the compressed frame's "
                                f"{size[0]} x {size[1]}")
    if size[0] == 0 and size[1] != columns:
        raise InvalidImageError(f"{name}: Columns ({columns}) differ from the compressed frame's {size[1]}")
