"""The built-in NIfTI-1 codec agrees with nibabel and SimpleITK (engines.data.io), both ways."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
from aiaa_client import read_nifti, write_nifti
from helpers import GEOMETRY

from engines.data.io import read_volume, write_volume

OBLIQUE = np.array([[0.0, -0.8, 0.0, 10.0], [0.9, 0.0, 0.0, -3.0], [0.0, 0.0, -1.5, 7.0], [0.0, 0.0, 0.0, 1.0]])


@pytest.mark.parametrize("dtype", ["uint8", "int16", "uint16", "float32", "float64", "int32"])
def test_written_files_read_the_same_in_nibabel(dtype):
    array = (np.random.RandomState(0).rand(5, 6, 7) * 100).astype(dtype)
    data = write_nifti(array, OBLIQUE)
    image = nib.Nifti1Image.from_bytes(gzip.decompress(data))
    assert np.array_equal(np.asarray(image.dataobj), array)
    np.testing.assert_allclose(image.affine, OBLIQUE, atol=1e-5)
    np.testing.assert_allclose(image.get_qform(), OBLIQUE, atol=1e-5)  # the qform alone is right too
    back, affine = read_nifti(data)
    assert back.dtype == array.dtype and np.array_equal(back, array)
    np.testing.assert_allclose(affine, OBLIQUE, atol=1e-5)


def test_reads_nibabel_files_from_sform_or_qform_and_scaled():
    array = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    image = nib.Nifti1Image(array, OBLIQUE)
    back, affine = read_nifti(image.to_bytes())
    assert np.array_equal(back, array) and np.allclose(affine, OBLIQUE, atol=1e-5)
    image.set_qform(OBLIQUE, code=1)
    image.set_sform(None, code=0)
    _, affine = read_nifti(image.to_bytes())
    np.testing.assert_allclose(affine, OBLIQUE, atol=1e-5)
    image.header.set_slope_inter(2.0, 1.0)
    scaled, _ = read_nifti(image.to_bytes())
    np.testing.assert_allclose(scaled, array * 2.0 + 1.0)


def test_agrees_with_the_servers_simpleitk_io():
    array = (np.random.RandomState(1).rand(6, 5, 4) * 50).astype(np.float32)
    server_written = write_volume(array, GEOMETRY, ".nii.gz", dtype="float32")
    back, affine = read_nifti(server_written)
    np.testing.assert_allclose(back, array)
    volume = read_volume(write_nifti(back, affine), "x.nii.gz")
    np.testing.assert_allclose(volume.array, array)
    np.testing.assert_allclose(volume.geometry.spacing, GEOMETRY.spacing, atol=1e-5)
    np.testing.assert_allclose(volume.geometry.origin, GEOMETRY.origin, atol=1e-4)
    np.testing.assert_allclose(volume.geometry.direction, GEOMETRY.direction, atol=1e-5)


def test_refuses_what_it_cannot_read():
    with pytest.raises(ValueError, match="not a NIfTI-1"):
        read_nifti(b"NRRD0004\n" + bytes(400))
    with pytest.raises(ValueError, match="cannot write"):
        write_nifti(np.zeros((2, 2, 2), np.complex64))
