import numpy as np
import pytest
import torch
from helpers import phantom, phantom_points

from engines.config.model import ComponentSpec
from engines.errors import ConfigError, UnknownComponentError
from engines.transforms.registry import REGISTRY, build_transform, build_transforms

CLARA = [
    "transforms.LoadNifty", "transforms.VolumeTo4dArray", "transforms.ScaleIntensityRange",
    "transforms.NormalizeNonzeroIntensities", "transforms.AddExtremePointsChannel",
    "transforms.CropForegroundObject", "transforms.SplitAcrossChannels", "transforms.BratsConvertLabels",
]


def test_clara_names_are_registered():
    assert set(CLARA) <= set(REGISTRY)


def test_monai_dictionary_names_resolve_and_fields_means_keys():
    t = build_transform(ComponentSpec(name="ScaleIntensityRanged",
                                      args={"fields": "image", "a_min": 0, "a_max": 10, "b_min": 0, "b_max": 1}))
    out = t({"image": np.full((1, 2, 2, 2), 5.0, np.float32)})
    assert float(out["image"].max()) == pytest.approx(0.5)


def test_clara_scale_and_normalize_are_monai_behaviour():
    pipeline = build_transforms([
        ComponentSpec(name="transforms.VolumeTo4dArray", args={"fields": "image"}),
        ComponentSpec(name="transforms.NormalizeNonzeroIntensities", args={"fields": "image"}),
    ])
    image = np.zeros((4, 4, 4), np.float32)
    image[:2] = [[[1, 3, 1, 3]]]
    out = pipeline({"image": image})["image"]
    assert out.shape == (1, 4, 4, 4)
    assert float(out[0, :2].mean()) == pytest.approx(0.0, abs=1e-6) and float(out[0, 2:].abs().max()) == 0.0


def test_unknown_and_non_dictionary_names_are_refused():
    with pytest.raises(UnknownComponentError, match="unknown transform 'Nope'"):
        build_transform(ComponentSpec(name="Nope"))
    with pytest.raises(UnknownComponentError):
        build_transform(ComponentSpec(name="ScaleIntensityRange"))  # array transform, not a dict transform
    with pytest.raises(ConfigError, match="bad arguments"):
        build_transform(ComponentSpec(name="NormalizeIntensityd", args={"keys": "image", "colour": 1}))


@pytest.mark.parametrize("name", ["SaveImaged", "LoadImage", "Lambdad", "RandLambdad", "DataStatsd",
                                  "SaveClassificationd", "ToDeviced"])
def test_transforms_that_write_read_or_run_code_are_refused(name, tmp_path):
    # SaveImaged with a chosen output_dir, from an uploaded model config, would write anywhere.
    with pytest.raises(UnknownComponentError, match="not allowed"):
        build_transform(ComponentSpec(name=name, args={"keys": "image", "output_dir": str(tmp_path)}))
    assert not list(tmp_path.iterdir())


def test_every_transform_the_shipped_and_test_configs_name_is_allowed():
    import json

    from helpers import REPO

    from engines.transforms.registry import REGISTRY, monai_allowlist

    names = set()
    for path in (REPO / "model_configs").glob("*.json"):
        config = json.loads(path.read_text())
        names |= {t["name"] for key in ("pre_transforms", "post_transforms") for t in config.get(key, [])}
    names |= {"RandFlipd", "RandShiftIntensityd", "RandScaleIntensityd", "RandGaussianNoised", "RandAffined",
              "RandSpatialCropd", "RandAdjustContrastd", "SpatialPadd", "RandZoomd", "RandCropByPosNegLabeld",
              "ScaleIntensityRanged", "NormalizeIntensityd", "EnsureChannelFirstd", "AsDiscreted"}  # augmentations
    assert names <= set(REGISTRY) | monai_allowlist()


def test_crop_and_guidance_follow_the_points():
    volume, mask = phantom()
    points = np.asarray(phantom_points(mask), float)
    pipeline = build_transforms([
        ComponentSpec(name="transforms.LoadNifti", args={"fields": ["image", "label"], "allow_missing_keys": True}),
        ComponentSpec(name="transforms.VolumeTo4dArray", args={"fields": ["image", "label"], "allow_missing_keys": True}),
        ComponentSpec(name="transforms.CropForegroundObject",
                      args={"fields": ["image", "label"], "roi": [32, 32, 32], "padding": 4.0,
                            "modes": ["trilinear", "nearest-exact"]}),
        ComponentSpec(name="transforms.AddExtremePointsChannel", args={"fields": "image", "sigma": 1.0}),
    ])
    from engines.data.io import Volume

    out = pipeline({"image": volume, "label": Volume(mask.astype(np.float32), volume.geometry), "points": points})
    assert tuple(out["image"].shape) == (2, 32, 32, 32)
    box = out["crop_box"]
    # padding 4 mm on spacing (0.8, 0.9, 1.5) -> 5, 5, 3 voxels (ceil/floor) around the object
    assert box.start == (10 - 5, 15 - 5, 9 - 3)
    for p in np.rint(out["points"]).astype(int):
        assert float(out["image"][1][tuple(p)]) == pytest.approx(1.0, abs=0.05)  # guidance peaks at each point
        assert int(out["label"][0][tuple(p)]) == 1  # and each point is on the object
    assert np.asarray(out["image"]).dtype == np.float32


def test_closed_form_guidance_equals_monais_filtered_points():
    from monai.transforms.utils import extreme_points_to_image

    from engines.transforms.registry import points_guidance

    # points on every border, one twice (MONAI sets a voxel to 1, so a repeat adds nothing)
    points = np.array([[0, 5, 6], [39, 20, 20], [10, 0, 30], [12, 47, 10], [20, 20, 0], [20, 21, 43], [20, 21, 43]])
    for sigma in (1.0, 2.0, 3.5):
        ours = points_guidance(points, (40, 48, 44), sigma)
        monai = extreme_points_to_image([tuple(p) for p in points], torch.zeros(1, 40, 48, 44), sigma=sigma,
                                        rescale_min=0.0, rescale_max=1.0)[0].numpy()
        np.testing.assert_allclose(ours, monai, atol=1e-6)


def test_percentile_scaling_equals_monais():
    from monai import transforms as mt

    image = np.random.default_rng(0).gamma(2.0, 100.0, size=(1, 30, 34, 28)).astype(np.float32)
    args = {"keys": "image", "lower": 0.5, "upper": 99.5, "b_min": 0.0, "b_max": 1.0, "clip": True}
    ours = build_transform(ComponentSpec(name="ScaleIntensityRangePercentilesd", args=args))({"image": image})
    monai = mt.ScaleIntensityRangePercentilesd(**args)({"image": image})
    np.testing.assert_allclose(ours["image"], np.asarray(monai["image"]), atol=1e-6)
    flat = build_transform(ComponentSpec(name="ScaleIntensityRangePercentilesd", args=args))(
        {"image": np.full((1, 4, 4, 4), 7.0, np.float32)})
    assert np.all(flat["image"] == 0.0)  # a constant image is shifted to b_min, as MONAI does


def test_simulated_points_are_skipped_when_points_are_given():
    t = build_transform(ComponentSpec(name="ExtremePointsFromLabeld", args={"keys": "label", "perturbation": 3}))
    given = np.ones((6, 3))
    assert t({"label": np.ones((1, 4, 4, 4)), "points": given})["points"] is given
    simulated = t({"label": np.pad(np.ones((1, 4, 4, 4)), ((0, 0), (2, 2), (2, 2), (2, 2)))})["points"]
    assert simulated.shape == (6, 3)


def test_largest_component_equals_monais():
    from monai import transforms as mt

    rng = np.random.default_rng(1)
    labels = (rng.random((1, 24, 20, 18)) > 0.7).astype(np.uint8)  # many components, touching by corners
    labels[0, 2:8, 2:8, 2:8] = 1
    labels[0, 12:14, 12:14, 12:14] = 2
    for connectivity in (None, 1, 2):
        args = {"keys": "pred", "applied_labels": [1], "connectivity": connectivity}
        ours = build_transform(ComponentSpec(name="KeepLargestConnectedComponentd", args=args))({"pred": labels})
        monai = mt.KeepLargestConnectedComponentd(**args)({"pred": labels})
        np.testing.assert_array_equal(np.asarray(ours["pred"]), np.asarray(monai["pred"]))
    several = {"keys": "pred", "applied_labels": [1, 2], "independent": False}
    ours = build_transform(ComponentSpec(name="KeepLargestConnectedComponentd", args=several))({"pred": labels})
    np.testing.assert_array_equal(np.asarray(ours["pred"]),
                                  np.asarray(mt.KeepLargestConnectedComponentd(**several)({"pred": labels})["pred"]))
