import io

import matplotlib.image
import numpy as np
import pytest

from engines.data.io import Geometry, Volume
from engines.data.snapshot import LABEL_COLOURS, LEGEND_PIXELS, PANEL_PIXELS, render_snapshot
from engines.errors import InvalidInputError

LPS = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))


def picture(png: bytes) -> np.ndarray:
    return matplotlib.image.imread(io.BytesIO(png), format="png")[..., :3]


def has_colour(pixels: np.ndarray, colour) -> int:
    return int(np.all(np.abs(pixels - np.asarray(colour)) < 0.02, axis=-1).sum())


def test_size_and_one_colour_per_label():
    image = Volume(np.random.RandomState(0).rand(40, 40, 30).astype(np.float32), LPS)
    mask = np.zeros((40, 40, 30), np.uint8)
    mask[10:20, 10:30, 10:20] = 1
    mask[20:30, 10:30, 10:20] = 2
    png = render_snapshot([image, image], Volume(mask, LPS), labels=["head", "body"], alpha=1.0)
    pixels = picture(png)
    assert pixels.shape[:2] == (2 * PANEL_PIXELS + LEGEND_PIXELS, 3 * PANEL_PIXELS)
    panels = pixels[: 2 * PANEL_PIXELS]
    assert has_colour(panels, LABEL_COLOURS[0]) > 500 and has_colour(panels, LABEL_COLOURS[1]) > 500
    assert has_colour(pixels[2 * PANEL_PIXELS:], LABEL_COLOURS[0]) > 20  # the legend
    assert has_colour(panels, LABEL_COLOURS[2]) == 0


def test_radiological_orientation_and_true_aspect():
    # The patient's left (LPS +x) must appear on the picture's right in the axial view, however
    # the voxels are stored: here the x axis is stored reversed.
    flipped = Geometry((2.0, 1.0, 1.0), (0.0, 0.0, 0.0), (-1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    image = Volume(np.ones((20, 60, 30), np.float32), flipped)
    mask = np.zeros((20, 60, 30), np.uint8)
    mask[:4, 25:35, 10:20] = 1  # low i = patient's left (x runs right-to-left in this file)
    pixels = picture(render_snapshot([image], Volume(mask, flipped), alpha=1.0))
    axial = pixels[:PANEL_PIXELS, :PANEL_PIXELS]
    cols = np.flatnonzero(np.any(np.all(np.abs(axial - LABEL_COLOURS[0]) < 0.02, axis=-1), axis=0))
    assert cols.min() > PANEL_PIXELS // 2  # on the right half
    # 40 mm wide (20 voxels of 2 mm) by 60 mm high: the image is drawn 2:3, not 1:3.
    bright = np.flatnonzero(np.any(axial.mean(axis=-1) > 0.2, axis=0))
    rows = np.flatnonzero(np.any(axial.mean(axis=-1) > 0.2, axis=1))
    assert (bright.max() - bright.min()) / (rows.max() - rows.min()) == pytest.approx(40 / 60, abs=0.05)


def test_modalities_as_rows_and_bad_inputs():
    four = Volume(np.random.RandomState(1).rand(16, 16, 16, 4).astype(np.float32), LPS)
    assert picture(render_snapshot([four])).shape[0] == 4 * PANEL_PIXELS + LEGEND_PIXELS
    with pytest.raises(InvalidInputError, match="share one grid"):
        render_snapshot([four], Volume(np.zeros((16, 16, 15), np.uint8), LPS))
    with pytest.raises(InvalidInputError, match="inside"):
        render_snapshot([four], point=[3, 4, 99])
