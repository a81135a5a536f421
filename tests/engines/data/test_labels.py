import numpy as np
import pytest

from engines.data.io import Geometry, Volume, write_volume_file
from engines.data.labels import merge_masks, read_mask
from engines.errors import InvalidInputError

GEOMETRY = Geometry((1.0, 1.0, 2.0), (5.0, -3.0, 0.0), tuple(np.eye(3).ravel()))


def box(low, high, shape=(12, 12, 6), geometry=GEOMETRY) -> Volume:
    mask = np.zeros(shape, np.uint8)
    mask[tuple(slice(a, b) for a, b in zip(low, high))] = 1
    return Volume(mask, geometry)


def test_later_masks_overwrite_earlier_ones_like_the_brats_c3d_steps():
    wt, tc, et = box((1, 1, 1), (11, 11, 5)), box((3, 3, 1), (9, 9, 5)), box((5, 5, 2), (7, 7, 4))
    merged = merge_masks([wt, tc, et]).array
    assert merged[1, 1, 1] == 1 and merged[3, 3, 1] == 2 and merged[5, 5, 2] == 3 and merged[0, 0, 0] == 0
    assert np.array_equal(merged > 0, wt.array > 0)
    reverse = merge_masks([et, tc, wt], values=[30, 20, 10]).array
    assert set(np.unique(reverse)) == {0, 10}  # the whole tumour came last and covers everything
    assert merged.dtype == np.uint8 and merge_masks([wt], values=[300]).array.dtype == np.uint16


def test_masks_on_different_grids_or_wrong_values_are_refused():
    other = Geometry((1.0, 1.0, 1.0), (5.0, -3.0, 0.0), tuple(np.eye(3).ravel()))
    with pytest.raises(InvalidInputError, match="not on the grid of"):
        merge_masks([box((1, 1, 1), (3, 3, 3)), box((1, 1, 1), (3, 3, 3), geometry=other)], names=["a", "b"])
    with pytest.raises(InvalidInputError, match="not on the grid of"):
        merge_masks([box((1, 1, 1), (3, 3, 3)), box((1, 1, 1), (3, 3, 3), shape=(12, 12, 7))])
    with pytest.raises(InvalidInputError, match="one value per mask"):
        merge_masks([box((1, 1, 1), (3, 3, 3))], values=[1, 2])


def test_a_mask_can_be_values_of_a_label_map(tmp_path):
    labels = np.zeros((6, 6, 6), np.uint8)
    labels[1, 1, 1], labels[2, 2, 2], labels[3, 3, 3], labels[4, 4, 4] = 1, 2, 3, 4
    path = write_volume_file(Volume(labels, GEOMETRY), tmp_path / "ot.nii.gz")
    core = read_mask(f"{path}:1,3,4").array
    assert core.sum() == 3 and core[2, 2, 2] == 0
    assert read_mask(path).array.sum() == 4
    assert read_mask(str(path)).geometry == Volume(labels, GEOMETRY).geometry
