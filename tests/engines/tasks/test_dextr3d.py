import numpy as np
import pytest
from helpers import annotation_config, bright_annotation_net, client_crop, client_uncrop, dice, phantom, phantom_points

from engines.config.model import ModelConfig
from engines.data.io import Geometry, Volume
from engines.errors import InvalidImageError, InvalidPointsError
from engines.tasks.dextr3d import Dextr3dEngine


@pytest.fixture()
def engine():
    return Dextr3dEngine("ann", ModelConfig.model_validate(annotation_config()), bright_annotation_net)


def test_full_volume_mask_on_the_input_grid(engine):
    volume, mask = phantom()
    result = engine.infer(volume, {"points": phantom_points(mask)})
    assert result.mask.shape == volume.shape and result.mask.dtype == np.uint8
    assert set(np.unique(result.mask)) == {0, 1}
    assert dice(result.mask, mask) > 0.95
    assert len(result.params["points"]) == 6
    assert {"pre", "infer", "post", "total"} <= set(result.timings)


def test_only_the_box_around_the_points_is_segmented(engine):
    volume, mask = phantom(shape=(80, 48, 32))
    volume.array[60:75, 10:30, 10:20] = 150.0  # a second bright object far from the clicks
    result = engine.infer(volume, {"points": phantom_points(mask)})
    assert result.mask[60:75].sum() == 0
    assert dice(result.mask, mask) > 0.95


def test_client_cropped_128_cube_with_points_on_the_edge(engine):
    volume, mask = phantom(shape=(40, 48, 32), center=(30, 25, 15))
    points = phantom_points(mask)
    points[1][0] = 39  # a click on the last voxel: the client maps it to 128, one past the crop
    cropped, crop_points, low, crop_size = client_crop(volume, points)
    assert max(max(p) for p in crop_points) == 128
    result = engine.infer(cropped, {"points": crop_points})
    assert result.mask.shape == (128, 128, 128)
    assert dice(client_uncrop(result.mask, low, crop_size, mask.shape), mask) > 0.9


def test_bad_points_and_images(engine):
    volume, mask = phantom()
    with pytest.raises(InvalidPointsError):
        engine.infer(volume, {"points": phantom_points(mask)[:4]})
    with pytest.raises(InvalidPointsError):
        engine.infer(volume, {})
    with pytest.raises(InvalidImageError, match="3D"):
        engine.infer(Volume(np.zeros((30, 30), np.float32), Geometry.identity(2)), {"points": [[1, 1]] * 6})


def test_info_carries_padding_roi_sigma(engine):
    info = engine.info()
    assert info["type"] == "annotation" and info["roi"] == [32, 32, 32]
    assert isinstance(info["version"], str) and isinstance(info["padding"], float) and "sigma" in info


def test_a_click_copies_only_the_box_it_crops_and_gives_the_same_mask():
    # Was: every click copied the whole (session) volume to float32, then cropped.
    import json as _json

    from helpers import REPO, annotation_config, phantom, phantom_points

    from engines.config.model import ModelConfig
    from engines.data.io import Volume
    from engines.tasks.dextr3d import Dextr3dEngine

    volume, mask = phantom(shape=(80, 96, 64), center=(30, 40, 30))
    volume = Volume(volume.array.astype(np.int16), volume.geometry)  # a CT-like integer volume
    points = phantom_points(mask)
    seen = []

    def network(x):
        seen.append(tuple(x.shape))
        return (x[:, :1] > 0.5).float() * 8 - 4

    shipped = _json.loads((REPO / "model_configs" / "annotation_mri_hippocampus.json").read_text())
    engine = Dextr3dEngine("a", ModelConfig.model_validate(annotation_config(pre_transforms=shipped["pre_transforms"], roi=[48, 48, 48])),
                           network)
    region = engine.input_region(volume, np.asarray(points, float))
    assert region is not None and np.prod(region.size) < volume.array.size / 4
    first = engine.infer(volume, {"points": points}).mask
    engine.input_region = lambda *args: None  # the whole volume through the same pipeline
    whole = engine.infer(volume, {"points": points}).mask
    assert np.array_equal(first, whole) and first.any() and seen[0] == seen[1]
