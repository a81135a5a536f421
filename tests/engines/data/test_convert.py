import locale

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import CT_DICOM_SERIES, SHARED_DATA

from engines.data.convert import check_dicom_slices, convert, find_sources, resample
from engines.errors import InvalidImageError, InvalidInputError

# An oblique grid (rotated about two axes) with anisotropic voxels.
_ANGLE = np.deg2rad(20.0)
_ROT = np.array([[np.cos(_ANGLE), -np.sin(_ANGLE), 0], [np.sin(_ANGLE), np.cos(_ANGLE), 0], [0, 0, 1]]) @ np.array(
    [[1, 0, 0], [0, np.cos(_ANGLE / 2), -np.sin(_ANGLE / 2)], [0, np.sin(_ANGLE / 2), np.cos(_ANGLE / 2)]])
DIRECTION = tuple(_ROT.ravel().tolist())
SPACING = (0.7, 0.9, 2.5)
ORIGIN = (-40.25, 12.5, 103.0)


def known_volume(shape=(24, 20, 9)) -> sitk.Image:
    """int16 voxels whose value encodes their index, on the oblique anisotropic grid."""
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    array = (i + 100 * j + 3000 * k - 5000).astype(np.int16)
    image = sitk.GetImageFromArray(array.transpose())
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(DIRECTION)
    return image


def write_dicom_series(image: sitk.Image, folder, skip=(), duplicate=None, description="known volume"):
    """One DICOM file per slice with position and orientation tags, as a scanner would write them."""
    ctype = locale.setlocale(locale.LC_CTYPE)  # GDCM's writer resets the C locale: restore it after
    try:
        return _write_dicom_series(image, folder, skip, duplicate, description)
    finally:
        locale.setlocale(locale.LC_CTYPE, ctype)


def _write_dicom_series(image, folder, skip, duplicate, description):
    folder.mkdir(parents=True, exist_ok=True)
    direction = image.GetDirection()
    orientation = "\\".join(f"{v:.10g}" for v in (direction[0], direction[3], direction[6],
                                                      direction[1], direction[4], direction[7]))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    slices = [k for k in range(image.GetDepth()) if k not in skip] + ([duplicate] if duplicate is not None else [])
    for n, k in enumerate(slices):
        piece = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0008|0060": "MR", "0008|103e": description, "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": "1.2.826.0.1.3680043.2.1125.1.7", "0008|0018": f"1.2.826.0.1.3680043.2.1125.1.7.{n + 1}",
            "0020|0037": orientation, "0020|0032": "\\".join(f"{v:.10g}" for v in position),
            "0020|0013": str(n + 1), "0028|0030": f"{SPACING[1]:.10g}\\{SPACING[0]:.10g}",
            "0018|0050": f"{SPACING[2]:.10g}",
        }
        for key, value in tags.items():
            piece.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice{n:03d}.dcm"))
        writer.Execute(piece)
    return folder


def test_dicom_series_converts_back_to_the_same_voxels_and_oblique_geometry(tmp_path):
    image = known_volume()
    write_dicom_series(image, tmp_path / "in" / "patient1" / "t2_oblique")
    results = convert(tmp_path / "in", tmp_path / "out")
    assert [(r.status, r.output.name) for r in results] == [("written", "patient1_t2_oblique.nii.gz")]
    back = sitk.ReadImage(str(results[0].output))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
    np.testing.assert_allclose(back.GetSpacing(), SPACING, atol=1e-5)
    np.testing.assert_allclose(back.GetOrigin(), ORIGIN, atol=1e-4)
    np.testing.assert_allclose(back.GetDirection(), DIRECTION, atol=1e-5)


def test_existing_outputs_are_skipped_unless_forced(tmp_path):
    write_dicom_series(known_volume(), tmp_path / "in" / "s")
    convert(tmp_path / "in", tmp_path / "out")
    target = tmp_path / "out" / "s.nii.gz"
    target.write_bytes(b"old")
    assert convert(tmp_path / "in", tmp_path / "out")[0].status == "skipped"
    assert target.read_bytes() == b"old"
    assert convert(tmp_path / "in", tmp_path / "out", force=True, output_suffix=".nii.gz")[0].status == "written"
    assert sitk.ReadImage(str(target)).GetSize() == known_volume().GetSize()


@pytest.mark.parametrize("damage, message", [
    ({"skip": (4,)}, "1 slice(s) missing"),
    ({"duplicate": 3}, "duplicate slices"),
])
def test_missing_or_duplicate_slices_are_refused_and_nothing_is_written(tmp_path, damage, message):
    write_dicom_series(known_volume(), tmp_path / "in" / "s", **damage)
    results = convert(tmp_path / "in", tmp_path / "out")
    assert results[0].status == "failed" and message in results[0].message
    assert list((tmp_path / "out").iterdir()) == []


def test_mixed_slice_sizes_are_refused(tmp_path):
    folder = write_dicom_series(known_volume(), tmp_path / "s")
    small = known_volume((10, 20, 9))
    write_dicom_series(small, tmp_path / "other")
    files = sorted(str(p) for p in folder.iterdir()) + [str(sorted((tmp_path / "other").iterdir())[0])]
    with pytest.raises(InvalidImageError, match="mixes slice sizes"):
        check_dicom_slices(files)


def test_a_folder_without_images_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(InvalidInputError, match="no DICOM series found"):
        find_sources(tmp_path)
    with pytest.raises(InvalidInputError, match=r"no \.nii\.gz image found"):
        find_sources(tmp_path, ".nii.gz")


def test_resampling_keeps_the_physical_extent_and_labels_stay_labels(tmp_path):
    labels = np.zeros((30, 24, 10), np.uint8)
    labels[5:20, 4:18, 2:8] = 3
    labels[8:12, 6:10, 3:6] = 7
    image = sitk.GetImageFromArray(labels.transpose())
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(DIRECTION)
    out = resample(image, [1.5, 1.5, 1.5], label=True)
    assert set(np.unique(sitk.GetArrayFromImage(out))) == {0, 3, 7}

    def corners(img):  # outer corners of the first and last voxels, in mm
        d = np.asarray(img.GetDirection()).reshape(3, 3)
        s = np.asarray(img.GetSpacing())
        first = np.asarray(img.GetOrigin()) - d @ (s / 2)
        return first, first + d @ (np.asarray(img.GetSize()) * s)

    for a, b in zip(corners(image), corners(out)):
        np.testing.assert_allclose(a, b, atol=0.75 + 1e-6)  # within half an output voxel (rounded size)
    np.testing.assert_allclose(corners(image)[0], corners(out)[0], atol=1e-6)  # the first corner stays put
    np.testing.assert_allclose(out.GetDirection(), DIRECTION)
    linear = resample(sitk.Cast(image, sitk.sitkFloat32), [1.5, 1.5, 1.5])
    assert len(np.unique(sitk.GetArrayFromImage(linear))) > 3  # images are interpolated


def test_image_files_convert_with_per_axis_resolution(tmp_path):
    (tmp_path / "in").mkdir()
    sitk.WriteImage(known_volume(), str(tmp_path / "in" / "a.mha"))
    results = convert(tmp_path / "in", tmp_path / "out", source_suffix=".mha", output_suffix=".nii",
                      resolution=[1.4, 1.8, 2.5])
    out = sitk.ReadImage(str(results[0].output))
    assert results[0].output.name == "a.nii"
    np.testing.assert_allclose(out.GetSpacing(), (1.4, 1.8, 2.5), atol=1e-5)
    assert out.GetSize() == (12, 10, 9)


def test_real_ct_dicom_series_lands_on_the_grid_of_its_segmentation(tmp_path):
    if not CT_DICOM_SERIES.is_dir():
        pytest.skip("../shared/data/totalsegmentator_example is absent (real data lives beside the repo)")
    result, = convert(CT_DICOM_SERIES, tmp_path)
    image = sitk.ReadImage(str(result.output))
    seg = sitk.ReadImage(str(SHARED_DATA / "totalsegmentator_example" / "example_seg_dicom.nii.gz"))
    assert image.GetSize() == seg.GetSize() == (512, 512, 20)
    np.testing.assert_allclose(image.GetSpacing(), seg.GetSpacing(), atol=1e-4)
    # Same voxel centres in space (the segmentation stores the rows in the opposite order).
    last = [s - 1 for s in image.GetSize()]
    for index in ([0, 0, 0], last):
        flipped = [index[0], last[1] - index[1], index[2]]
        np.testing.assert_allclose(image.TransformIndexToPhysicalPoint(index),
                                   seg.TransformIndexToPhysicalPoint(flipped), atol=1e-3)
