"""Appearance changes of training images: off leaves them alone, on changes intensities and nothing else."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import deepgrow_config, phantom_datalist

from engines.errors import ConfigError
from engines.training.appearance import AppearanceAugmentation
from engines.training.interactive import load_interactive_train_config, train_interactive


def crop() -> np.ndarray:
    """A normalised crop: a bright ball on a darker background, with noise."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in (32, 32, 16)], indexing="ij"))
    ball = ((grid[0] - 16) ** 2 + (grid[1] - 16) ** 2 + (4 * (grid[2] - 8)) ** 2) < 100
    return (ball * 2.0 - 0.5 + np.random.default_rng(0).normal(0, 0.1, ball.shape)).astype(np.float32)


def test_probability_zero_returns_the_image_itself():
    image = crop()
    assert AppearanceAugmentation(0.0, np.random.default_rng(0))(image) is image


def test_changed_images_keep_shape_and_finiteness_and_vary_with_the_draws():
    image = crop()
    augment = AppearanceAugmentation(1.0, np.random.default_rng(0))
    outs = [augment(image) for _ in range(40)]
    assert all(o.shape == image.shape and o.dtype == np.float32 and np.isfinite(o).all() for o in outs)
    assert image is not outs[0] and np.array_equal(image, crop())  # the input is not modified
    changes = [float(np.abs(o - image).mean()) for o in outs]
    assert min(changes) >= 0 and sum(c > 0.01 for c in changes) >= 30  # most draws change something
    # Some are inverted (the ball darker than its background), most are not.
    ball = image > 0.75
    inverted = sum(float(o[ball].mean()) < float(o[~ball].mean()) for o in outs)
    assert 1 <= inverted <= 15


def test_the_same_seed_gives_the_same_changes():
    image = crop()
    a = AppearanceAugmentation(0.7, np.random.default_rng(3))
    b = AppearanceAugmentation(0.7, np.random.default_rng(3))
    for _ in range(10):
        assert np.array_equal(a(image), b(image))


def test_train_configs_turn_it_on_by_share(tmp_path):
    datalist = phantom_datalist(tmp_path / "data")
    settings = {"interactive": True, "batch_size": 2, "max_steps": 2, "max_rounds": 1, "num_threads": 1,
                "min_object_voxels": 5, "val_objects_per_dataset": 0, "datasets": [{"datalist": str(datalist)}]}
    (tmp_path / "train.json").write_text(json.dumps({**settings, "appearance_probability": 0.5}))
    assert load_interactive_train_config(tmp_path / "train.json").appearance_probability == 0.5
    metrics = train_interactive(deepgrow_config(tmp_path), tmp_path / "train.json", None, tmp_path / "run",
                                progress=lambda _: None)
    assert metrics["steps"] == 2 and metrics["train_config"]["appearance_probability"] == 0.5
    (tmp_path / "bad.json").write_text(json.dumps({**settings, "appearance_probability": 1.5}))
    with pytest.raises(ConfigError, match="appearance_probability"):
        load_interactive_train_config(tmp_path / "bad.json")
