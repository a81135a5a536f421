import json

import numpy as np
import pytest
from helpers import annotation_config, write_phantom_datalist

from engines.config.model import ModelConfig
from engines.data.datalist import load_datalist
from engines.errors import ConfigError
from engines.training.trainer import _train_pipeline, load_train_config

CLARA = {
    "epochs": 3,
    "batch_size": 2,
    "num_workers": 4,
    "multi_gpu": False,
    "network_input_size": [32, 32, 32],
    "num_training_epoch_per_valid": 2,
    "use_amp": False,
    "net_config": {"name": "UNet"},
    "train": {
        "loss": {"name": "Dice"},
        "optimizer": {"name": "Adam", "lr": 2e-4},
        "lr_policy": {"name": "ReducePoly", "args": {"poly_power": 0.8}},
        "pre_transforms": [
            {"name": "LoadNifti", "args": {"fields": ["image", "label"]}},
            {"name": "VolumeTo4dArray", "args": {"fields": ["image", "label"]}},
            {"name": "ScaleIntensityOscillation", "args": {"fields": "image", "magnitude": 0.1}},
            {"name": "CropForegroundObject", "args": {"size": [32, 32, 32], "pad": 10}},
            {"name": "NPRandomFlip3D", "args": {"applied_keys": ["image", "label"], "probability": 0.5}},
            {"name": "NPRandomZoom3D", "args": {"lower_limits": [0.9, 0.9, 0.9], "upper_limits": [1.1, 1.1, 1.1],
                                                "probability": 0.5}},
            {"name": "NPRandomRot90_XY", "args": {"probability": 0.5}},
            {"name": "AddExtremePointsChannel", "args": {"sigma": 3, "pert": 2}},
        ],
    },
}


def test_a_clara_config_train_maps_onto_our_train_config_and_monai_augmentations(tmp_path):
    path = tmp_path / "config_train.json"
    path.write_text(json.dumps(CLARA))
    cfg = load_train_config(path)
    assert (cfg.epochs, cfg.batch_size, cfg.val_interval, cfg.learning_rate) == (3, 2, 2, 2e-4)
    assert (cfg.loss, cfg.lr_schedule, cfg.poly_power, cfg.weight_decay, cfg.mixed_precision) == \
        ("DiceLoss", "poly", 0.8, 0.0, False)
    assert [a.name for a in cfg.augmentations] == ["RandScaleIntensityd"]
    assert [a.name for a in cfg.augmentations_last] == ["RandFlipd"] * 3 + ["RandZoomd", "RandRotate90d"]
    assert cfg.augment_before == "transforms.AddExtremePointsChannel"
    assert any("'pert'=2" in note for note in cfg.clara_notes)
    # the mapped augmentations run on a real training case of the annotation pipeline
    datalist = write_phantom_datalist(tmp_path / "data")
    sample = _train_pipeline(ModelConfig.model_validate(annotation_config()), cfg)(load_datalist(datalist)["training"][0])
    assert tuple(sample["image"].shape) == (2, 32, 32, 32) and set(np.unique(np.asarray(sample["label"]))) <= {0, 1}


def test_clara_keys_without_an_equivalent_are_refused_one_by_one(tmp_path):
    bad = json.loads(json.dumps(CLARA))
    bad["net_config"] = {"name": "SegAhnet"}
    bad["train"]["optimizer"] = {"name": "Momentum", "lr": 0.1}
    bad["train"]["pre_transforms"].append({"name": "NPRandomElastic", "args": {}})
    path = tmp_path / "config_train.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(ConfigError) as err:
        load_train_config(path)
    message = str(err.value)
    assert "SegAhnet" in message and "TensorFlow-only" in message
    assert "optimizer 'Momentum'" in message and "NPRandomElastic" in message
    assert message.count(";") == 2
