"""The shared prompt encoding: crops, channels, paste-back and border detection."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engines.errors import InvalidPointsError
from engines.transforms.prompts import (
    CHANNELS,
    Prompt,
    crop_box,
    encode,
    mask_extent,
    normalise_volume,
    to_crop,
    touches_border,
)


def test_normalise_volume_is_modality_free():
    ct = np.random.default_rng(0).normal(-500, 400, (20, 20, 10)).astype(np.float32)
    ct[0, 0, 0] = 3000  # an outlier is clipped
    out = normalise_volume(ct)
    assert out.dtype == np.float32 and abs(out.mean()) < 1e-4 and abs(out.std() - 1) < 1e-3


def test_crop_box_covers_positive_prompts_with_margin_and_minimum_size():
    box = Prompt("box", box=((10, 10, 2), (20, 30, 3)))
    lo, hi = crop_box((64, 64, 8), (1.0, 1.0, 8.0), [box], None, margin=0.25, min_size_mm=16)
    assert (lo <= [10, 10, 2]).all() and (hi >= [20, 30, 3]).all()
    assert hi[2] - lo[2] == 2  # 16 mm at 8 mm slices
    assert hi[1] - lo[1] == 30  # 20 voxels widened by a quarter on each side


def test_crop_box_ignores_negative_prompts_when_something_is_positive():
    pos = Prompt("point", voxels=np.array([[30, 30, 4]]))
    neg = Prompt("point", positive=False, voxels=np.array([[1, 1, 1]]))
    lo, _ = crop_box((64, 64, 8), (1, 1, 1), [pos, neg], None, min_size_mm=10)
    assert (lo[:2] > 1).all()


def test_encode_channels_and_paste_back():
    image = normalise_volume(np.random.default_rng(1).random((40, 40, 12)))
    mask = np.zeros(image.shape, bool)
    mask[15:25, 15:25, 4:8] = True
    prompts = [Prompt("point", voxels=np.array([[20, 20, 6]])), Prompt("point", False, np.array([[12, 12, 6]])),
               Prompt("scribble", False, np.array([[14, 30, 5], [15, 30, 5]])),
               Prompt("box", box=((14, 14, 6), (26, 26, 7)))]
    lo, hi = np.array([8, 8, 2]), np.array([32, 32, 10])
    x = encode(image, mask, prompts, lo, hi, (16, 16, 16))
    assert x.shape == (len(CHANNELS), 16, 16, 16)
    assert x[2].sum() > 0 and x[3].sum() > x[2].sum() * 0.5 and x[4].max() > 0.5
    assert x[1].max() == pytest.approx(1.0)
    crop = to_crop(np.where(x[1] > 0.5, 5.0, -5.0), lo, hi)
    assert crop.shape == (24, 24, 8) and crop[10, 10, 4] and not crop[0, 0, 0]


def _alone(crop: np.ndarray, roi) -> np.ndarray:
    """One channel at the crop's resolution taken to the ROI by itself."""
    t = torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32))[None, None]
    return F.interpolate(t, size=roi, mode="trilinear", align_corners=False)[0, 0].numpy()


@pytest.mark.parametrize("roi", [(16, 24, 8), (24, 24, 8), (40, 30, 9)])  # down, mixed and up-sampling, and no-op
def test_encode_resamples_all_channels_at_once_exactly_as_each_alone(roi):
    rng = np.random.default_rng(3)
    image = normalise_volume(rng.random((50, 44, 14)))
    mask = rng.random(image.shape) > 0.6
    scribble = np.array([[20, 20, 5], [21, 20, 5], [22, 21, 6]])
    prompts = [Prompt("scribble", True, scribble), Prompt("scribble", False, scribble + [0, 5, 0]),
               Prompt("box", box=((15, 15, 5), (30, 28, 6)))]
    lo, hi = np.array([10, 6, 3]), np.array([50, 36, 12])
    x = encode(image, mask, prompts, lo, hi, roi)
    crop = tuple(slice(a, b) for a, b in zip(lo, hi))

    def raster(voxels=None, box=None):
        out = np.zeros(tuple(hi - lo), np.float32)
        if box is not None:
            out[tuple(slice(a - o, b - o) for a, b, o in zip(*box, lo))] = 1
        else:
            out[tuple((voxels - lo).T)] = 1
        return out

    expected = [image[crop], mask[crop], raster(scribble), raster(scribble + [0, 5, 0]),
                raster(box=((15, 15, 5), (30, 28, 6)))]
    for channel, want in zip(x, expected):
        np.testing.assert_array_equal(channel, _alone(want, roi) if tuple(roi) != tuple(hi - lo) else want)


def test_mask_extent_is_the_bounding_box_of_the_foreground():
    rng = np.random.default_rng(4)
    for shape in [(30, 20, 10), (7, 40), (1, 1, 1)]:
        for density in (0.001, 0.05, 1.0):
            mask = rng.random(shape) < density
            if not mask.any():
                continue
            lo, hi = mask_extent(mask)
            where = np.argwhere(mask)
            np.testing.assert_array_equal(lo, where.min(0))
            np.testing.assert_array_equal(hi, where.max(0) + 1)


def test_touches_border_only_on_inner_faces():
    crop = np.zeros((5, 5, 5), bool)
    crop[0, 2, 2] = True
    assert touches_border(crop, np.array([3, 0, 0]), np.array([8, 5, 5]), (10, 10, 10))
    assert not touches_border(crop, np.array([0, 0, 0]), np.array([5, 5, 5]), (10, 10, 10))


def test_prompts_outside_or_empty_are_refused():
    with pytest.raises(InvalidPointsError):
        Prompt("point", voxels=np.array([[50, 0, 0]])).check((10, 10, 10))
    with pytest.raises(InvalidPointsError):
        Prompt("scribble").check((10, 10, 10))
    with pytest.raises(InvalidPointsError):
        Prompt("box", box=((0, 0, 0), (11, 5, 1))).check((10, 10, 10))
