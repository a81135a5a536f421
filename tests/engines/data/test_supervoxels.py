"""Self-supervised training objects: merged supervoxels find homogeneous regions, and train like labels."""

from __future__ import annotations

import numpy as np
from helpers import phantom_datalist, train_beside_phantom

from engines.data.io import read_volume
from engines.data.supervoxels import supervoxel_regions
from engines.evaluation.interactive import load_interactive_datalist
from engines.training.sources import load_sources
from server.cli.main import main

CUBES = {2.0: (slice(6, 18), slice(6, 18), slice(4, 14)), 3.0: (slice(28, 40), slice(8, 20), slice(6, 16)),
         4.0: (slice(10, 22), slice(30, 42), slice(10, 20))}


def body_with_three_cubes() -> np.ndarray:
    """A body (intensity 1, most of the volume) on a dark border, holding three cubes of intensities 2, 3, 4."""
    image = np.zeros((48, 48, 24), np.float32)
    image[2:-2, 2:-2, 1:-1] = 1.0
    for value, box in CUBES.items():
        image[box] = value
    return image + np.random.default_rng(0).normal(0, 0.05, image.shape).astype(np.float32)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_each_homogeneous_cube_is_one_region_and_the_body_is_dropped():
    labels = supervoxel_regions(body_with_three_cubes(), (1.0, 1.0, 2.0), 0.06, segments=120, min_voxels=50)
    assert labels.dtype == np.uint8 and labels.shape == (48, 48, 24)
    values = np.unique(labels[labels > 0])
    assert list(values) == list(range(1, len(values) + 1))  # numbered 1..K
    for box in CUBES.values():
        cube = np.zeros(labels.shape, bool)
        cube[box] = True
        assert max(dice(cube, labels == v) for v in values) > 0.8
    # The body around the cubes is over a quarter of the foreground: not an object.
    body = np.zeros(labels.shape, bool)
    body[2:-2, 2:-2, 1:-1] = True
    for box in CUBES.values():
        body[box] = False
    assert max(dice(body, labels == v) for v in values) < 0.5


def test_at_most_max_regions_in_a_seeded_random_order():
    image = body_with_three_cubes()
    few = supervoxel_regions(image, (1.0, 1.0, 2.0), 0.0, segments=200, min_voxels=20, max_regions=5)
    assert few.max() == 5
    again = supervoxel_regions(image, (1.0, 1.0, 2.0), 0.0, segments=200, min_voxels=20, max_regions=5)
    assert np.array_equal(few, again)
    other = supervoxel_regions(image, (1.0, 1.0, 2.0), 0.0, segments=200, min_voxels=20, max_regions=5, seed=1)
    assert not np.array_equal(few, other)


def test_the_cli_writes_label_maps_on_the_images_grid_and_a_datalist_training_reads(tmp_path):
    datalist = phantom_datalist(tmp_path / "data")
    out = tmp_path / "supervoxels"
    assert main(["supervoxels", "--datalist", str(datalist), "--thresholds", "0.03", "-o", str(out)]) == 0
    written = load_interactive_datalist(out / "supervoxels.json")
    assert written.dataset == "supervoxels" and len(written.training) == 2 and not written.validation
    for case in written.training:
        image, label = read_volume(case["image"]), read_volume(case["label"])
        assert label.shape == image.shape and label.geometry == image.geometry
    sources = load_sources([written], min_voxels=5, progress=lambda _: None)
    assert sources and all(s.dataset == "supervoxels" and s.structures for s in sources)
    assert all(name.startswith("label_") for s in sources for name in s.structures)

    # A train config names it beside the labelled data, like any datalist.
    metrics = train_beside_phantom(tmp_path, datalist, out / "supervoxels.json")
    assert metrics["steps"] == 2 and set(metrics["datasets"]) == {"phantom", "supervoxels"}

