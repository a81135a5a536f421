import numpy as np
import pytest

from engines.errors import InvalidPointsError
from engines.transforms.points import CropBox, crop_box, extreme_points, parse_points, resize, to_roi

SHAPE = (40, 50, 30)
SIX = [[1, 2, 3], [30, 2, 3], [5, 0, 3], [5, 49, 3], [5, 6, 0], [5, 6, 29]]


def test_points_as_list_or_json_string():
    assert parse_points(SIX, SHAPE).shape == (6, 3)
    assert parse_points(str(SIX), SHAPE).tolist() == parse_points(SIX, SHAPE).tolist()


def test_points_one_past_the_edge_are_clipped():
    points = parse_points([[128, 0, 5]] + SIX[1:], (128, 128, 128))
    assert points[0].tolist() == [127, 0, 5]


@pytest.mark.parametrize("raw, message", [
    (None, "missing"),
    (SIX[:5], "at least 6"),
    ("not json", "not JSON"),
    ({"a": 1}, "list"),
    ([[1, 2]] * 6, "3 numbers"),
    ([["a", 2, 3]] * 6, "3 numbers"),
    ([[True, 2, 3]] * 6, "3 numbers"),
    ([[float("nan"), 2, 3]] * 6, "finite"),
    ([[1e9, 2, 3]] + SIX[1:], "outside"),
    ([[-5, 2, 3]] + SIX[1:], "outside"),
    ([[1, 2, 3]] * 5000, "too many"),
])
def test_absurd_points_are_refused(raw, message):
    with pytest.raises(InvalidPointsError, match=message):
        parse_points(raw, SHAPE)


def test_crop_box_pads_in_millimetres_and_clips():
    points = np.array([[10, 10, 10], [20, 30, 15]], float)
    box = crop_box(points, spacing=(1.0, 2.0, 5.0), padding_mm=10, shape=SHAPE)
    assert box.start == (0, 5, 8)
    assert box.end == (31, 36, 18)


def test_to_roi_maps_voxel_centres():
    box = CropBox((10, 10, 10), (20, 30, 40))
    mapped = to_roi(np.array([[10, 10, 10], [19, 29, 39]], float), box, (20, 20, 30))
    np.testing.assert_allclose(mapped[0], [0.5, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(mapped[1], [19.0, 19.0, 29.0], atol=0.51)


def test_resize_round_trip_of_a_label_is_nearly_lossless():
    label = np.zeros((1, 21, 33, 17), np.float32)
    label[0, 5:15, 8:25, 4:12] = 1
    up = resize(resize(label, (48, 48, 48), "nearest-exact"), (21, 33, 17), "trilinear") > 0.5
    assert (up.numpy() == label.astype(bool)).mean() > 0.99


def test_extreme_points_lie_on_the_object():
    mask = np.zeros((20, 20, 20), np.uint8)
    mask[4:9, 6:15, 2:18] = 1
    points = extreme_points(mask)
    assert len(points) == 6
    assert all(mask[tuple(p.astype(int))] for p in points)
    assert points[:, 0].min() == 4 and points[:, 0].max() == 8
    jittered = extreme_points(mask, np.random.RandomState(0), perturbation=2.0)
    planes = [4, 8, 6, 14, 2, 17]  # min/max of each axis
    for n, point in enumerate(jittered):
        assert abs(point[n // 2] - planes[n]) <= 2.0
    assert not np.array_equal(jittered, points)
