"""Uploaded DICOM series are checked as ``aiaa convert`` checks them, before any pixel is decoded."""

import locale

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import dicom_series_files

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
