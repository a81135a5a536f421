import json

import numpy as np
import pytest
import torch
from helpers import REPO, SHARED_DATA

from engines.config.model import ComponentSpec, load_model_config
from engines.data.datalist import load_datalist
from engines.data.io import Geometry, Volume, read_modalities, write_volume_file
from engines.errors import InvalidImageError
from engines.tasks.segmentation import SegmentationEngine
from engines.transforms.registry import build_transform, build_transforms

BRATS = SHARED_DATA / "brats2013_6cases"
CONFIG = REPO / "model_configs" / "segmentation_mri_brats_tumour.json"
GEOMETRY = Geometry((1.0, 1.0, 1.0), (0.0, -239.0, 0.0), tuple(np.eye(3).ravel()))


@pytest.mark.parametrize("labelling, core", [("2013", {1, 3, 4}), ("2017", {1, 4})])
def test_brats_labels_become_nested_tc_wt_et_channels(labelling, core):
    label = np.arange(5, dtype=np.float32).reshape(5, 1, 1) * np.ones((5, 2, 2), np.float32)
    convert = build_transform(ComponentSpec(name="transforms.BratsConvertLabels",
                                            args={"fields": "label", "labelling": labelling}))
    channels = np.asarray(convert({"label": label})["label"])
    assert channels.shape == (3, 5, 2, 2)
    tc, wt, et = ({v for v in range(5) if channels[c, v, 0, 0]} for c in range(3))
    assert tc == core and wt == ({1, 2, 3, 4} if labelling == "2013" else {1, 2, 4}) and et == {4}


def test_multimodal_datalist_cases_stack_their_images_as_channels_in_order(tmp_path):
    flair, t1c = np.full((8, 9, 10), 1.0, np.float32), np.full((8, 9, 10), 2.0, np.float32)
    write_volume_file(Volume(flair, GEOMETRY), tmp_path / "c" / "flair.nii.gz")
    write_volume_file(Volume(t1c, GEOMETRY), tmp_path / "c" / "t1c.nii.gz")
    write_volume_file(Volume(np.zeros((8, 9, 10), np.uint8), GEOMETRY), tmp_path / "c" / "seg.nii.gz")
    (tmp_path / "d.json").write_text(json.dumps({"training": [
        {"image": ["c/t1c.nii.gz", "c/flair.nii.gz"], "label": "c/seg.nii.gz"}]}))
    case = load_datalist(tmp_path / "d.json")["training"][0]
    assert case["image"] == [str(tmp_path / "c/t1c.nii.gz"), str(tmp_path / "c/flair.nii.gz")]
    load = build_transforms([ComponentSpec(name="transforms.LoadNifti", args={"fields": ["image", "label"]}),
                             ComponentSpec(name="EnsureChannelFirstd", args={"keys": "image", "channel_dim": -1})])
    image = np.asarray(load(case)["image"])
    assert image.shape == (2, 8, 9, 10) and image[0].max() == 2.0 and image[1].max() == 1.0
    write_volume_file(Volume(np.zeros((8, 9, 11), np.float32), GEOMETRY), tmp_path / "c" / "small.nii.gz")
    with pytest.raises(InvalidImageError, match="share one grid"):
        read_modalities([tmp_path / "c/flair.nii.gz", tmp_path / "c/small.nii.gz"])


def two_channel_net(x: torch.Tensor) -> torch.Tensor:
    """Stand-in 4-class network: class 3 where channel 1 is bright, class 1 where only channel 0 is."""
    a, b = x[:, :1], x[:, 1:2]
    return torch.cat([-a - b, a - b, torch.zeros_like(a) - 5, b * 2], dim=1) * 5


def test_cropped_and_resized_prediction_is_pasted_back_on_the_input_grid():
    config = load_model_config(CONFIG)
    shape = (60, 50, 40)
    brain = np.zeros(shape, np.float32)
    brain[10:50, 8:44, 5:35] = 1.0  # the non-zero region, cropped and resized to 128^3
    flair, t1c = brain * 0.1, brain * 0.1
    flair[20:35, 15:30, 10:25] = 3.0  # edema-like
    t1c[25:30, 20:25, 15:20] = 3.0  # enhancing-like
    engine = SegmentationEngine("brats", config, two_channel_net)
    result = engine.infer(Volume(np.stack([flair, t1c], -1), GEOMETRY), {})
    assert result.mask.shape == shape
    assert result.mask[0:10].max() == 0  # outside the crop: background
    assert result.mask[27, 22, 17] == 3 and result.mask[21, 16, 11] == 1
    assert abs(int((result.mask == 3).sum()) - 125) < 40  # the 5^3 block, back at its own size
    with pytest.raises(InvalidImageError, match="takes 2 image channels"):
        engine.infer(Volume(flair, GEOMETRY), {})


def test_real_brats_case_through_the_model_config_pipeline():
    if not BRATS.is_dir():
        pytest.skip("../shared/data/brats2013_6cases is absent (real data lives beside the repo)")
    folder = BRATS / "brats_2013_pat0001_1"
    config = load_model_config(CONFIG)
    pipeline = build_transforms(config.pre_transforms)
    data = pipeline({"image": [str(folder / "Flair_subtrMeanDivStd.nii.gz"), str(folder / "T1c_subtrMeanDivStd.nii.gz")],
                     "label": str(folder / "OTMultiClass.nii.gz")})
    image = torch.as_tensor(data["image"])
    assert tuple(image.shape) == (2, 128, 128, 128) and data["original_shape"] == (240, 240, 155)
    for channel in image:  # z-scored per modality on its non-zero voxels
        inside = channel[channel != 0]
        assert abs(float(inside.mean())) < 0.05 and abs(float(inside.std()) - 1) < 0.05
    assert set(np.unique(np.asarray(data["label"]))) == {0, 1, 2, 3, 4}
