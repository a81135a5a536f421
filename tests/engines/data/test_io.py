import gzip

import numpy as np
import pytest
from helpers import GEOMETRY, dicom_series_files, phantom

from engines.data.io import detect_suffix, fortran_order, read_dicom_series, read_volume, write_volume
from engines.errors import InputTooLargeError, InvalidImageError


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_round_trip_keeps_voxels_order_and_geometry(suffix):
    volume, _ = phantom()
    data = write_volume(volume.array, volume.geometry, suffix, dtype="float32")
    back = read_volume(data, f"/some/client/path/x{suffix}")
    assert back.shape == volume.shape
    np.testing.assert_allclose(back.array, volume.array)
    np.testing.assert_allclose(back.geometry.spacing, GEOMETRY.spacing)
    np.testing.assert_allclose(back.geometry.origin, GEOMETRY.origin, atol=1e-4)
    np.testing.assert_allclose(back.geometry.direction, GEOMETRY.direction, atol=1e-6)


def test_suffix_from_name_or_magic_bytes():
    volume, _ = phantom()
    gz = write_volume(volume.array, volume.geometry, ".nii.gz")
    raw = write_volume(volume.array, volume.geometry, ".nii")
    assert detect_suffix("C:\\tmp\\tmpab12.nii.gz") == ".nii.gz"
    assert detect_suffix(None, gz[:16]) == ".nii.gz"
    assert detect_suffix("blob", raw[:16]) == ".nii"
    assert detect_suffix(None, b"NRRD0004\n") == ".nrrd"
    with pytest.raises(InvalidImageError, match="cannot tell"):
        detect_suffix("notes.txt", b"hello")


def test_compress_flag_and_dtype():
    volume, mask = phantom()
    data = write_volume(mask, volume.geometry, ".nii", dtype="uint16", compress=True)
    assert data[:2] == b"\x1f\x8b"
    back = read_volume(data, "m.nii.gz")
    assert back.array.dtype == np.uint16 and back.array.sum() == mask.sum()


def test_garbage_corrupt_truncated_and_empty_are_invalid():
    volume, _ = phantom()
    good = write_volume(volume.array, volume.geometry, ".nii.gz")
    with pytest.raises(InvalidImageError):
        read_volume(b"this is not an image at all", "x.nii.gz")
    with pytest.raises(InvalidImageError):
        read_volume(good[: len(good) // 2], "x.nii.gz")
    with pytest.raises(InvalidImageError):
        read_volume(gzip.compress(b"\x00" * 400), "x.nii.gz")
    with pytest.raises(InvalidImageError, match="empty"):
        read_volume(b"", "x.nii.gz")


def test_voxel_limit_is_checked_from_the_header():
    volume, _ = phantom()
    data = write_volume(volume.array, volume.geometry, ".nii.gz")
    with pytest.raises(InputTooLargeError, match="limit"):
        read_volume(data, "x.nii.gz", max_voxels=1000)


def test_dicom_series_is_sorted_by_position_whatever_the_upload_order():
    files = dicom_series_files()
    volume = read_dicom_series(files)
    assert volume.shape == (512, 512, 20) and volume.array.dtype == np.int16
    np.testing.assert_allclose(volume.geometry.spacing, (0.9765625, 0.9765625, 2.0))
    shuffled = read_dicom_series(files[::-1][10:] + files[::-1][:10])
    np.testing.assert_array_equal(shuffled.array, volume.array)
    assert shuffled.geometry == volume.geometry
    # slices along k really are in order: the z origin is the lowest slice position
    assert volume.geometry.origin[2] == min(read_volume(f).geometry.origin[2] for f in files)


def test_one_dicom_file_is_recognised_by_its_magic_bytes():
    one = dicom_series_files()[0]
    assert detect_suffix("blob", one[:1024]) == ".dcm"
    assert read_volume(one).shape == (512, 512, 1)


def test_bad_dicom_series_are_invalid():
    files = dicom_series_files()
    with pytest.raises(InvalidImageError, match="1 of the 4 uploaded files are not slices"):
        read_dicom_series(files[:3] + [b"not dicom"])
    with pytest.raises(InvalidImageError, match="none of the 2"):
        read_dicom_series([b"not dicom", b"neither"])
    with pytest.raises(InvalidImageError, match="empty"):
        read_dicom_series(files[:2] + [b""])
    with pytest.raises(InputTooLargeError, match="limit"):
        read_dicom_series(files, max_voxels=512 * 512 * 10)


@pytest.mark.parametrize("shape", [(64, 48, 700), (7, 5), (2, 3, 4, 2)])  # a large volume (slabs), a plane, 4D
def test_fortran_order_is_the_transposed_copy_in_any_dtype(shape):
    array = np.random.default_rng(0).random(shape) > 0.5
    out = fortran_order(array, np.uint8)
    np.testing.assert_array_equal(out, array.astype(np.uint8).transpose())
    assert out.flags.c_contiguous and out.dtype == np.uint8
    assert out.tobytes() == array.astype(np.uint8).tobytes(order="F")
