import numpy as np
import pytest
from helpers import bright_segmentation_net, dice, phantom, segmentation_config

from engines.config.model import ModelConfig
from engines.data.io import Geometry, Volume
from engines.errors import InvalidImageError
from engines.tasks.segmentation import SegmentationEngine


@pytest.fixture()
def engine():
    return SegmentationEngine("seg", ModelConfig.model_validate(segmentation_config()), bright_segmentation_net)


def test_label_values_follow_label_order_on_the_input_grid(engine):
    volume, mask = phantom(shape=(40, 70, 36), center=(20, 35, 18), radii=(8, 20, 6))
    result = engine.infer(volume, {})
    assert result.mask.shape == volume.shape and result.mask.dtype == np.uint8
    assert set(np.unique(result.mask)) == {0, 1, 2}
    assert dice(result.mask > 0, mask) > 0.95
    assert result.mask[:20].max() <= 1 and result.mask[20:].min() != 1  # label 1 low half, 2 high half of axis 0
    assert result.params["labels"] == ["anterior", "posterior"]
    assert len(result.params["points"]) == 6


def test_empty_result_has_empty_points(engine):
    flat = Volume(np.zeros((33, 33, 33), np.float32), Geometry.identity())
    result = engine.infer(flat, {})
    assert result.mask.sum() == 0 and result.params["points"] == []


def test_not_3d_is_refused(engine):
    with pytest.raises(InvalidImageError):
        engine.infer(Volume(np.zeros((4, 30, 30, 30), np.float32), Geometry.identity(4)), {})
