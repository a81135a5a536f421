"""Synthetic training objects: hollow shapes painted into an image's body, and trained on like labels."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import phantom_datalist, train_beside_phantom
from scipy import ndimage

from engines.data import synthetic_shapes
from engines.data.io import read_volume
from engines.data.synthetic_shapes import paint_shapes, shape_structures
from engines.evaluation.interactive import load_interactive_datalist
from engines.training.sources import load_sources
from server.cli.main import main


def body_image() -> np.ndarray:
    """A noisy body of intensities 0..100 on a border of air (-50), 1.5 mm voxels in plane, 3 mm slices."""
    rng = np.random.default_rng(0)
    image = np.full((96, 96, 40), -50.0, np.float32)
    image[4:-4, 4:-4, 2:-2] = rng.uniform(0, 100, (88, 88, 36))
    return ndimage.gaussian_filter(image, 1.0)


def test_shapes_are_walls_around_interiors_inside_the_body_and_painted_in_contrast():
    image = body_image()
    painted, labels = paint_shapes(image, (1.5, 1.5, 3.0), objects=3, seed=4)
    assert painted.shape == labels.shape == image.shape and labels.dtype == np.uint8
    assert set(np.unique(labels)) == set(range(7))  # three objects: walls 1, 3, 5 and interiors 2, 4, 6
    body = image > np.percentile(image, 20)
    assert body[labels > 0].all()  # shapes end where the body does
    for n in range(3):
        wall, interior = labels == 2 * n + 1, labels == 2 * n + 2
        rim = ndimage.binary_dilation(interior) & ~interior
        assert (rim & wall).sum() > 0.25 * rim.sum()  # the wall wraps the interior (rings and tubes are open-ended)
        contrast = abs(float(painted[wall].mean()) - float(painted[interior].mean()))
        assert contrast > 0.2 * np.subtract(*np.percentile(image[body], [75, 25]))
    # painting blends over the shapes and their soft edges only: the rest of the image is untouched
    near = ndimage.binary_dilation(labels > 0, np.ones((3, 3, 3), bool), iterations=3)
    assert np.array_equal(painted[~near], image[~near]) and not np.array_equal(painted[near], image[near])


def test_a_shell_encloses_its_interior(monkeypatch):
    monkeypatch.setattr(synthetic_shapes, "SHAPES", ("shell",))
    image = body_image()
    _, labels = paint_shapes(image, (1.0, 1.0, 1.0), objects=2, seed=0)
    body = image > np.percentile(image, 20)
    for n in range(2):
        interior = labels == 2 * n + 2
        rim = ndimage.binary_dilation(interior) & ~interior & body
        assert interior.any() and (labels[rim] == 2 * n + 1).all()


def test_painting_is_seeded():
    image = body_image()
    first, again, other = (paint_shapes(image, (1.5, 1.5, 3.0), seed=s)[1] for s in (1, 1, 2))
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_structures_name_each_wall_interior_and_both():
    assert shape_structures(2) == {"wall_1": [1], "interior_1": [2], "whole_1": [1, 2],
                                   "wall_2": [3], "interior_2": [4], "whole_2": [3, 4]}


def test_the_cli_writes_painted_images_and_a_datalist_training_reads(tmp_path):
    datalist = phantom_datalist(tmp_path / "data")
    out = tmp_path / "shapes"
    assert main(["synthetic-shapes", "--datalist", str(datalist), "--copies", "1", "--objects", "2",
                 "-o", str(out)]) == 0
    written = load_interactive_datalist(out / "synthetic_shapes.json")
    assert written.dataset == "synthetic_shapes" and len(written.training) == 2 and not written.validation
    assert written.structures == {k: tuple(v) for k, v in shape_structures(2).items()}
    originals = load_interactive_datalist(datalist).training
    for case, original in zip(written.training, originals):
        image, label = read_volume(case["image"]), read_volume(case["label"])
        assert label.shape == image.shape and image.geometry == read_volume(original["image"]).geometry
    sources = load_sources([written], min_voxels=5, progress=lambda _: None)
    assert sources and all(s.dataset == "synthetic_shapes" and s.structures for s in sources)

    metrics = train_beside_phantom(tmp_path, datalist, out / "synthetic_shapes.json")
    assert metrics["steps"] == 2 and set(metrics["datasets"]) == {"phantom", "synthetic_shapes"}


def test_bad_counts_are_refused_in_one_line(tmp_path, capsys):
    datalist = phantom_datalist(tmp_path / "data")
    with pytest.raises(SystemExit) as exit_:
        main(["synthetic-shapes", "--datalist", str(datalist), "--copies", "0", "-o", str(tmp_path / "out")])
    assert exit_.value.code == 2
    assert "at least 1" in capsys.readouterr().err and not (tmp_path / "out").exists()
