"""Uploaded DICOM series are checked as ``aiaa convert`` checks them, before any pixel is decoded."""

import locale

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import dicom_series_files

from engines.data.dicom import check_dicom_slices
from engines.data.io import read_dicom_series
from engines.errors import InvalidImageError


def small_series(tmp_path, count=4, orientation="1\\0\\0\\0\\1\\0", orientations=None) -> list[bytes]:
    """``count`` uncompressed 8x8 int16 slices, 2 mm apart (SimpleITK writes implicit VR little endian)."""
    image = sitk.GetImageFromArray(np.arange(count * 64, dtype=np.int16).reshape(count, 8, 8))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    ctype = locale.setlocale(locale.LC_CTYPE)  # GDCM's writer resets the C locale
    try:
        for k in range(count):
            piece = image[:, :, k]
            tags = {"0020|000e": "1.2.826.0.1.3680043.2.1125.9", "0008|0018": f"1.2.826.0.1.3680043.2.1125.9.{k + 1}",
                    "0020|0037": (orientations or {}).get(k, orientation), "0020|0032": f"0\\0\\{2 * k}"}
            for key, value in tags.items():
                piece.SetMetaData(key, value)
            writer.SetFileName(str(tmp_path / f"s{k}.dcm"))
            writer.Execute(piece)
    finally:
        locale.setlocale(locale.LC_CTYPE, ctype)
    return [(tmp_path / f"s{k}.dcm").read_bytes() for k in range(count)]


def with_rows_columns(data: bytes, rows: int, columns: int) -> bytes:
    """Rewrite the Rows (0028,0010) and Columns (0028,0011) values of an implicit VR file."""
    for tag, value in ((b"\x28\x00\x10\x00", rows), (b"\x28\x00\x11\x00", columns)):
        at = data.find(tag + b"\x02\x00\x00\x00")
        assert at > 0
        data = data[:at + 8] + value.to_bytes(2, "little") + data[at + 10:]
    return data


def test_a_regular_small_series_reads(tmp_path):
    assert read_dicom_series(small_series(tmp_path)).shape == (8, 8, 4)


def test_rows_columns_larger_than_the_pixel_data_are_refused_before_decoding(tmp_path):
    files = [with_rows_columns(f, 4000, 4000) for f in small_series(tmp_path)]
    with pytest.raises(InvalidImageError, match=r"Rows x Columns \(4000 x 4000\) need 32000000 bytes"):
        read_dicom_series(files, max_voxels=10**9)


def test_mixed_orientations_are_refused(tmp_path):
    files = small_series(tmp_path, orientations={2: "0\\1\\0\\1\\0\\0"})
    with pytest.raises(InvalidImageError, match="mixes slice orientations"):
        read_dicom_series(files)


def test_unreadable_positions_are_refused(tmp_path):
    files = small_series(tmp_path)
    files[1] = files[1].replace(b"0\\0\\2", b"0\\0\\n", 1)
    with pytest.raises(InvalidImageError, match="valid Image Position"):
        read_dicom_series(files)


def test_a_duplicated_or_missing_slice_is_refused_like_aiaa_convert():
    files = dicom_series_files()
    with pytest.raises(InvalidImageError, match="duplicate slices"):
        read_dicom_series(files + [files[7]])
    with pytest.raises(InvalidImageError, match=r"1 slice\(s\) missing"):
        read_dicom_series(files[:7] + files[8:])


def compressed_series(tmp_path, compressor: str, count=3) -> list[bytes]:
    """``count`` 8x8 int16 slices 2 mm apart, compressed by GDCM (``JPEG``: lossless JPEG, ``JPEG2000``)."""
    files = []
    ctype = locale.setlocale(locale.LC_CTYPE)
    try:
        for k in range(count):
            piece = sitk.GetImageFromArray(np.arange(64, dtype=np.int16).reshape(8, 8) * (k + 1))
            for key, value in {"0020|000e": "1.2.826.0.1.3680043.2.1125.8", "0020|0037": "1\\0\\0\\0\\1\\0",
                               "0008|0018": f"1.2.826.0.1.3680043.2.1125.8.{k + 1}", "0020|0032": f"0\\0\\{2 * k}"}.items():
                piece.SetMetaData(key, value)
            writer = sitk.ImageFileWriter()
            writer.KeepOriginalImageUIDOn()
            writer.UseCompressionOn()
            writer.SetCompressor(compressor)
            writer.SetFileName(str(tmp_path / f"{compressor}{k}.dcm"))
            writer.Execute(piece)
            files.append((tmp_path / f"{compressor}{k}.dcm").read_bytes())
    finally:
        locale.setlocale(locale.LC_CTYPE, ctype)
    return files


def as_rle(jpeg_file: bytes, pixels: np.ndarray) -> bytes:
    """A GDCM-written compressed file rewritten as RLE Lossless: its transfer syntax and one RLE fragment
    (two segments: the int16 pixels' high then low bytes, as literal runs)."""
    old, new = b"1.2.840.10008.1.2.4.70", b"1.2.840.10008.1.2.5\x00"
    at = jpeg_file.find(old)
    meta_length = jpeg_file.find(b"\x02\x00\x00\x00UL\x04\x00")
    assert at > 0 and meta_length > 0
    group = int.from_bytes(jpeg_file[meta_length + 8:meta_length + 12], "little") - 2
    data = (jpeg_file[:meta_length + 8] + group.to_bytes(4, "little") + jpeg_file[meta_length + 12:at - 2]
            + len(new).to_bytes(2, "little") + new + jpeg_file[at + len(old):])
    raw = pixels.astype("<i2").ravel()
    segments = [(raw.view(np.uint8)[1::2]).tobytes(), (raw.view(np.uint8)[0::2]).tobytes()]
    encoded = [b"".join(bytes([len(seg[i:i + 128]) - 1]) + seg[i:i + 128] for i in range(0, len(seg), 128))
               for seg in segments]
    encoded = [e + b"\x00" * (len(e) % 2) for e in encoded]  # segments have even lengths
    header = len(encoded).to_bytes(4, "little") + (64).to_bytes(4, "little")
    header += (64 + len(encoded[0])).to_bytes(4, "little") + bytes(64 - 12)
    fragment = header + b"".join(encoded)
    pixel_data = b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff"
    start = data.rfind(pixel_data) + len(pixel_data)
    return (data[:start] + b"\xfe\xff\x00\xe0" + bytes(4) + b"\xfe\xff\x00\xe0" + len(fragment).to_bytes(4, "little")
            + fragment + b"\xfe\xff\xdd\xe0" + bytes(4))


def explicit_rows_columns(data: bytes, rows: int, columns: int) -> bytes:
    """Rewrite Rows and Columns of an explicit VR little endian file (what compressed files are)."""
    for tag, value in ((b"\x28\x00\x10\x00US\x02\x00", rows), (b"\x28\x00\x11\x00US\x02\x00", columns)):
        at = data.find(tag)
        assert at > 0
        data = data[:at + 8] + value.to_bytes(2, "little") + data[at + 10:]
    return data


@pytest.mark.parametrize("compressor", ["JPEG", "JPEG2000"])
def test_a_compressed_series_reads_and_one_whose_rows_columns_lie_is_refused(tmp_path, compressor):
    files = compressed_series(tmp_path, compressor)
    assert read_dicom_series(files).shape == (8, 8, 3)
    lying = [explicit_rows_columns(f, 4000, 4000) for f in files]
    with pytest.raises(InvalidImageError, match=r"Rows x Columns \(4000 x 4000\) differ from the compressed frame's 8 x 8"):
        read_dicom_series(lying, max_voxels=10**9)


def test_an_rle_series_passes_and_one_whose_rows_columns_lie_is_refused(tmp_path):
    pixels = [np.arange(64, dtype=np.int16).reshape(8, 8) * (k + 1) for k in range(3)]
    files = [as_rle(f, p) for f, p in zip(compressed_series(tmp_path, "JPEG"), pixels)]
    honest, lying = [], []
    for k, data in enumerate(files):  # the headers only: this SimpleITK build's GDCM does not decode RLE
        (tmp_path / f"rle{k}.dcm").write_bytes(data)
        (tmp_path / f"lie{k}.dcm").write_bytes(explicit_rows_columns(data, 4000, 4000))
        honest.append(str(tmp_path / f"rle{k}.dcm"))
        lying.append(str(tmp_path / f"lie{k}.dcm"))
    check_dicom_slices(honest)
    with pytest.raises(InvalidImageError, match=r"need 2 RLE segments of 16000000 bytes each; the pixel data holds 2 of"):
        check_dicom_slices(lying)
