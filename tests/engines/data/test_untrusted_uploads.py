"""Uploaded images carry their own voxels: headers pointing at other files and non-finite geometry are refused."""

import io

import nibabel
import numpy as np
import pytest

from engines.data.io import read_volume
from engines.errors import InvalidImageError

MHA = (b"ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_UCHAR\n"
       b"ElementSpacing = 1 1 1\nElementDataFile = %s\n")


@pytest.mark.parametrize("target", [b"/etc/passwd", b"/dev/zero", b"../../secret.raw", b"LIST"])
def test_metaimage_pointing_at_another_file_is_refused(target):
    with pytest.raises(InvalidImageError, match="ElementDataFile is not LOCAL"):
        read_volume(MHA % target, "x.mha")
    with pytest.raises(InvalidImageError, match="ElementDataFile is not LOCAL"):  # whatever the name says
        read_volume(MHA % target, "x.png")


def test_inline_metaimage_still_reads():
    assert read_volume(MHA % b"LOCAL" + bytes(64), "x.mha").shape == (4, 4, 4)


@pytest.mark.parametrize("key", [b"data file", b"datafile", b"DATA FILE"])
def test_nrrd_with_detached_data_is_refused(key):
    header = (b"NRRD0004\ntype: uchar\ndimension: 3\nsizes: 4 4 4\nencoding: raw\nendian: little\n"
              + key + b": /etc/passwd\n\n")
    with pytest.raises(InvalidImageError, match="separate data file"):
        read_volume(header, "x.nrrd")


def test_nan_or_infinite_spacing_is_refused_before_decoding():
    for spacing in (b"nan 1 1", b"inf 1 1", b"0 1 1"):
        data = MHA.replace(b"ElementSpacing = 1 1 1", b"ElementSpacing = " + spacing) % b"LOCAL" + bytes(64)
        with pytest.raises(InvalidImageError, match="spacing"):
            read_volume(data, "x.mha")


def test_nan_affine_is_refused():
    affine = np.eye(4)
    affine[0, 3] = np.nan
    image = nibabel.Nifti1Image(np.zeros((4, 4, 4), np.uint8), affine)
    image.header.set_qform(None, code=0)
    image.header.set_sform(affine, code=1)
    buffer = io.BytesIO()
    image.to_file_map({"image": nibabel.FileHolder(fileobj=buffer), "header": nibabel.FileHolder(fileobj=buffer)})
    with pytest.raises(InvalidImageError):
        read_volume(buffer.getvalue(), "x.nii")
