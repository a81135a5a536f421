"""Tiny MONAI bundles for tests, mirroring public model-zoo layouts, and MONAI's own runner.

``spleen_ct_segmentation`` (current ``initialize``/``run`` ids, Orientationd + Spacingd + sliding
window + Invertd) and ``brats_mri_segmentation`` 0.3.0 (legacy ``evaluating`` id, a list of
modality files, sigmoid + threshold + a Lambdad giving labels 1, 2, 4), with tiny networks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from engines.config.model import PoolEntry
from engines.data.io import Geometry, Volume

# An oblique-free but flipped, anisotropic grid: Orientationd and Spacingd both have work to do.
GEOMETRY = Geometry((0.9, 1.1, 2.5), (40.0, -12.5, 7.0), (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))

SPLEEN_NET = {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [4, 8, 8],
              "strides": [2, 2], "num_res_units": 1, "norm": "batch"}

SPLEEN_INFERENCE = {
    "imports": ["$import glob", "$import os"],
    "bundle_root": ".",
    "output_dir": "$@bundle_root + '/eval'",
    "output_ext": ".nii.gz",
    "output_dtype": "$numpy.float32",
    "output_postfix": "trans",
    "separate_folder": True,
    "dataset_dir": "/workspace/data/Task09_Spleen",
    "datalist": "$list(sorted(glob.glob(@dataset_dir + '/imagesTs/*.nii.gz')))",
    "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
    "network_def": SPLEEN_NET,
    "network": "$@network_def.to(@device)",
    "preprocessing": {"_target_": "Compose", "transforms": [
        {"_target_": "LoadImaged", "keys": "image"},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
        {"_target_": "Spacingd", "keys": "image", "pixdim": [1.5, 1.5, 2.0], "mode": "bilinear"},
        {"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -57, "a_max": 164, "b_min": 0, "b_max": 1,
         "clip": True},
        {"_target_": "EnsureTyped", "keys": "image"},
    ]},
    "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]", "transform": "@preprocessing"},
    "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                   "num_workers": 0},
    "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [96, 96, 96], "sw_batch_size": 4, "overlap": 0.5},
    "postprocessing": {"_target_": "Compose", "transforms": [
        {"_target_": "Activationsd", "keys": "pred", "softmax": True},
        {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
         "nearest_interp": False, "to_tensor": True},
        {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
        {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_ext": "@output_ext",
         "output_dtype": "@output_dtype", "output_postfix": "@output_postfix",
         "separate_folder": "@separate_folder"},
    ]},
    "handlers": [{"_target_": "StatsHandler", "iteration_log": False}],
    "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
                  "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing",
                  "val_handlers": "@handlers", "amp": True},
    "checkpointloader": {"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/model.pt'",
                         "load_dict": {"model": "@network"}},
    "initialize": ["$monai.utils.set_determinism(seed=123)", "$@checkpointloader(@evaluator)"],
    "run": ["$@evaluator.run()"],
}

SPLEEN_METADATA = {
    "version": "0.2.0",
    "monai_version": "0.9.0",
    "pytorch_version": "1.10.0",
    "optional_packages_version": {"nibabel": "3.2.1", "pytorch-ignite": "0.4.8"},
    "task": "Decathlon spleen segmentation",
    "description": "A tiny stand-in of the spleen CT segmentation bundle",
    "network_data_format": {
        "inputs": {"image": {"type": "image", "format": "hounsfield", "modality": "CT", "num_channels": 1,
                             "channel_def": {"0": "image"}}},
        "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": 2,
                             "channel_def": {"0": "background", "1": "spleen"}}},
    },
}

BRATS_NET = {"_target_": "SegResNet", "blocks_down": [1, 1], "blocks_up": [1], "init_filters": 8, "in_channels": 2,
             "out_channels": 3, "dropout_prob": 0.2}

BRATS_INFERENCE = {
    "imports": ["$import glob", "$import os"],
    "bundle_root": ".",
    "output_dir": "$@bundle_root + '/eval'",
    "data_list_file_path": "$@bundle_root + '/configs/datalist.json'",
    "dataset_dir": "/workspace/data/medical/brats2018challenge",
    "test_datalist": "$monai.data.load_decathlon_datalist(@data_list_file_path, data_list_key='testing', "
                     "base_dir=@dataset_dir)",
    "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
    "network_def": BRATS_NET,
    "network": "$@network_def.to(@device)",
    "preprocessing": {"_target_": "Compose", "transforms": [
        {"_target_": "LoadImaged", "keys": "image"},
        {"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": True, "channel_wise": True},
    ]},
    "dataset": {"_target_": "Dataset", "data": "@test_datalist", "transform": "@preprocessing"},
    "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": True,
                   "num_workers": 0},
    "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [240, 240, 160], "sw_batch_size": 1, "overlap": 0.5},
    "postprocessing": {"_target_": "Compose", "transforms": [
        {"_target_": "Activationsd", "keys": "pred", "sigmoid": True},
        {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
         "meta_keys": "pred_meta_dict", "nearest_interp": False, "to_tensor": True},
        {"_target_": "AsDiscreted", "keys": "pred", "threshold": 0.5},
        {"_target_": "Lambdad", "keys": "pred",
         "func": "$lambda x: torch.where(x[[2]] > 0, 4, torch.where(x[[0]] > 0, 1, torch.where(x[[1]] > 0, 2, 0)))"},
        {"_target_": "SaveImaged", "keys": "pred", "meta_keys": "pred_meta_dict", "output_dir": "@output_dir",
         "output_postfix": "seg", "output_dtype": "uint8", "resample": False, "squeeze_end_dims": True},
    ]},
    "handlers": [
        {"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/model.pt'",
         "load_dict": {"model": "@network"}},
        {"_target_": "StatsHandler", "iteration_log": False},
    ],
    "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
                  "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing",
                  "val_handlers": "@handlers", "amp": True},
    "evaluating": ["$setattr(torch.backends.cudnn, 'benchmark', True)", "$@evaluator.run()"],
}

BRATS_METADATA = {
    "version": "0.3.0",
    "monai_version": "0.9.1",
    "optional_packages_version": {"nibabel": "4.0.1", "pytorch-ignite": "0.4.9"},
    "task": "Multimodal Brain Tumor segmentation",
    "description": "A tiny two-modality stand-in of the BraTS bundle",
    "network_data_format": {
        "inputs": {"image": {"type": "image", "format": "magnitude", "modality": "MR", "num_channels": 2,
                             "channel_def": {"0": "T1c", "1": "FLAIR"}}},
        "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": 3,
                             "channel_def": {"0": "Tumor core", "1": "Whole tumor", "2": "Enhancing tumor"}}},
    },
}


def _network(definition: dict) -> torch.nn.Module:
    from monai.bundle import ConfigParser

    return ConfigParser({"net": definition}).get_parsed_content("net")


def write_bundle(folder: Path, inference: dict, metadata: dict, *, yaml_config: bool = False, seed: int = 0,
                 weights_net: dict | None = None) -> Path:
    """A bundle folder with random weights for ``network_def`` (or for ``weights_net``)."""
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    if yaml_config:
        (folder / "configs" / "inference.yaml").write_text(yaml.safe_dump(inference))
    else:
        (folder / "configs" / "inference.json").write_text(json.dumps(inference, indent=2))
    (folder / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=2))
    torch.manual_seed(seed)
    net = _network(weights_net or inference["network_def"])
    with torch.no_grad():  # spread the random outputs so that every label shows up
        for p in net.parameters():
            p.mul_(3.0)
    torch.save(net.state_dict(), folder / "models" / "model.pt")
    return folder


def ct_image(shape=(44, 38, 20)) -> Volume:
    """A smooth CT-like volume (-200..300 HU) with structure at every scale."""
    rng = np.random.RandomState(1)
    grid = np.stack(np.meshgrid(*[np.linspace(0, 3, s) for s in shape], indexing="ij"))
    image = 200 * np.sin(grid[0] * 2) * np.cos(grid[1] * 1.5) + 60 * grid[2] + rng.normal(0, 20, shape)
    return Volume(image.astype(np.float32), GEOMETRY)


def mr_channels(shape=(36, 32, 24)) -> list[Volume]:
    """Two MR-like modalities on one grid, zero outside a 'head'."""
    rng = np.random.RandomState(2)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    head = (grid ** 2).sum(0) < 0.8
    return [Volume((head * (rng.normal(100 * (c + 1), 30, shape) + 80 * grid[c])).astype(np.float32), GEOMETRY)
            for c in range(2)]


def run_monai(bundle: Path, run_id: str | None, output: Path, **overrides: str) -> None:
    """MONAI's own runner on the bundle (``python -m monai.bundle run``), as a user would start it."""
    argv = [sys.executable, "-m", "monai.bundle", "run", *([run_id] if run_id else []),
            "--config_file", str(next((bundle / "configs").glob("inference.*"))),
            "--meta_file", str(bundle / "configs" / "metadata.json"),
            "--bundle_root", str(bundle), "--output_dir", str(output)]
    for key, value in overrides.items():
        argv += [f"--{key}", value]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=bundle)
    assert run.returncode == 0, run.stderr[-3000:]


def only_file(folder: Path) -> Path:
    files = [p for p in folder.rglob("*.nii.gz")]
    assert len(files) == 1, files
    return files[0]


def entry(bundle: Path, **extra) -> PoolEntry:
    return PoolEntry.model_validate({"name": bundle.name, "bundle": str(bundle), **extra})


# spleen_ct_segmentation's train.json, evaluate.json and multi_gpu_train.json, with the tiny network,
# three classes (the phantom cases' labels 0, 1, 2), 16^3 crops and no worker processes.
_TRAIN_KEYS = ["image", "label"]
SPLEEN_TRAIN = {
    "imports": ["$import glob", "$import os", "$import ignite"],
    "bundle_root": ".",
    "ckpt_dir": "$@bundle_root + '/models'",
    "output_dir": "$@bundle_root + '/eval'",
    "dataset_dir": "/workspace/data/Task09_Spleen",
    "images": "$list(sorted(glob.glob(@dataset_dir + '/imagesTr/*.nii.gz')))",
    "labels": "$list(sorted(glob.glob(@dataset_dir + '/labelsTr/*.nii.gz')))",
    "val_interval": 1,
    "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
    "network_def": {**SPLEEN_NET, "out_channels": 3},
    "network": "$@network_def.to(@device)",
    "loss": {"_target_": "DiceCELoss", "include_background": False, "to_onehot_y": True, "softmax": True,
             "squared_pred": True, "batch": True, "smooth_nr": 0.00001, "smooth_dr": 0.00001},
    "optimizer": {"_target_": "torch.optim.Adam", "params": "$@network.parameters()", "lr": 0.001},
    "train": {
        "deterministic_transforms": [
            {"_target_": "LoadImaged", "keys": _TRAIN_KEYS},
            {"_target_": "EnsureChannelFirstd", "keys": _TRAIN_KEYS},
            {"_target_": "Orientationd", "keys": _TRAIN_KEYS, "axcodes": "RAS"},
            {"_target_": "ScaleIntensityd", "keys": "image"},
            {"_target_": "EnsureTyped", "keys": _TRAIN_KEYS},
        ],
        "random_transforms": [
            {"_target_": "RandCropByPosNegLabeld", "keys": _TRAIN_KEYS, "label_key": "label",
             "spatial_size": [16, 16, 16], "pos": 1, "neg": 1, "num_samples": 2, "image_key": "image",
             "image_threshold": 0},
        ],
        "preprocessing": {"_target_": "Compose",
                          "transforms": "$@train#deterministic_transforms + @train#random_transforms"},
        "dataset": {"_target_": "CacheDataset", "data": "$[{'image': i, 'label': l} for i, l in zip(@images, @labels)]",
                    "transform": "@train#preprocessing", "cache_rate": 1.0, "num_workers": 0},
        "dataloader": {"_target_": "DataLoader", "dataset": "@train#dataset", "batch_size": 2, "shuffle": True,
                       "num_workers": 0},
        "inferer": {"_target_": "SimpleInferer"},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {"_target_": "AsDiscreted", "keys": ["pred", "label"], "argmax": [True, False], "to_onehot": 3},
        ]},
        "handlers": [
            {"_target_": "ValidationHandler", "validator": "@validate#evaluator", "epoch_level": True,
             "interval": "@val_interval"},
            {"_target_": "StatsHandler", "tag_name": "train_loss",
             "output_transform": "$monai.handlers.from_engine(['loss'], first=True)"},
            {"_target_": "TensorBoardStatsHandler", "log_dir": "@output_dir", "tag_name": "train_loss",
             "output_transform": "$monai.handlers.from_engine(['loss'], first=True)"},
        ],
        "key_metric": {"train_accuracy": {"_target_": "ignite.metrics.Accuracy",
                                          "output_transform": "$monai.handlers.from_engine(['pred', 'label'])"}},
        "trainer": {"_target_": "SupervisedTrainer", "max_epochs": 300, "device": "@device",
                    "train_data_loader": "@train#dataloader", "network": "@network", "loss_function": "@loss",
                    "optimizer": "@optimizer", "inferer": "@train#inferer", "postprocessing": "@train#postprocessing",
                    "key_train_metric": "@train#key_metric", "train_handlers": "@train#handlers", "amp": True},
    },
    "validate": {
        "preprocessing": {"_target_": "Compose", "transforms": "%train#deterministic_transforms"},
        "dataset": {"_target_": "CacheDataset", "data": "$[{'image': i, 'label': l} for i, l in zip(@images, @labels)]",
                    "transform": "@validate#preprocessing", "cache_rate": 1.0},
        "dataloader": {"_target_": "DataLoader", "dataset": "@validate#dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [32, 32, 32], "sw_batch_size": 2, "overlap": 0.25},
        "postprocessing": "%train#postprocessing",
        "handlers": [
            {"_target_": "StatsHandler", "iteration_log": False},
            {"_target_": "TensorBoardStatsHandler", "log_dir": "@output_dir", "iteration_log": False},
            {"_target_": "CheckpointSaver", "save_dir": "@ckpt_dir", "save_dict": {"model": "@network"},
             "save_key_metric": True, "key_metric_filename": "model.pt"},
        ],
        "key_metric": {"val_mean_dice": {"_target_": "MeanDice", "include_background": False,
                                         "output_transform": "$monai.handlers.from_engine(['pred', 'label'])"}},
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@validate#dataloader",
                      "network": "@network", "inferer": "@validate#inferer", "postprocessing": "@validate#postprocessing",
                      "key_val_metric": "@validate#key_metric", "val_handlers": "@validate#handlers", "amp": True},
    },
    "initialize": ["$monai.utils.set_determinism(seed=123)", "$setattr(torch.backends.cudnn, 'benchmark', True)"],
    "run": ["$@train#trainer.run()"],
}

SPLEEN_EVALUATE = {
    "validate#dataset#cache_rate": 0,
    "validate#postprocessing": {"_target_": "Compose", "transforms": [
        {"_target_": "Activationsd", "keys": "pred", "softmax": True},
        {"_target_": "Invertd", "keys": ["pred", "label"], "transform": "@validate#preprocessing", "orig_keys": "image",
         "nearest_interp": [False, True], "to_tensor": True},
        {"_target_": "AsDiscreted", "keys": ["pred", "label"], "argmax": [True, False], "to_onehot": 3},
        {"_target_": "SaveImaged", "_disabled_": True, "keys": "pred", "output_dir": "@output_dir", "resample": False,
         "squeeze_end_dims": True},
    ]},
    "validate#handlers": [
        {"_target_": "CheckpointLoader", "load_path": "$@ckpt_dir + '/model.pt'", "load_dict": {"model": "@network"}},
        {"_target_": "StatsHandler", "iteration_log": False},
        {"_target_": "MetricsSaver", "save_dir": "@output_dir", "metrics": ["val_mean_dice"],
         "metric_details": ["val_mean_dice"], "summary_ops": "*"},
    ],
    "run": ["$@validate#evaluator.run()"],
}

SPLEEN_MULTI_GPU_TRAIN = {
    "device": "$torch.device(f'cuda:{dist.get_rank()}')",
    "network": {"_target_": "torch.nn.parallel.DistributedDataParallel", "module": "$@network_def.to(@device)",
                "device_ids": ["@device"]},
    "train#sampler": {"_target_": "DistributedSampler", "dataset": "@train#dataset", "even_divisible": True,
                      "shuffle": True},
    "train#dataloader#sampler": "@train#sampler",
    "train#dataloader#shuffle": False,
    "train#trainer#train_handlers": "$@train#handlers[: -2 if dist.get_rank() > 0 else None]",
    "validate#sampler": {"_target_": "DistributedSampler", "dataset": "@validate#dataset", "even_divisible": False,
                         "shuffle": False},
    "validate#dataloader#sampler": "@validate#sampler",
    "validate#evaluator#val_handlers": "$None if dist.get_rank() > 0 else @validate#handlers",
    "initialize": [
        "$import torch.distributed as dist",
        "$dist.is_initialized() or dist.init_process_group(backend='nccl')",
        "$torch.cuda.set_device(@device)",
        "$monai.utils.set_determinism(seed=123)",
        "$import logging",
        "$@train#trainer.logger.setLevel(logging.WARNING if dist.get_rank() > 0 else logging.INFO)",
        "$@validate#evaluator.logger.setLevel(logging.WARNING if dist.get_rank() > 0 else logging.INFO)",
    ],
    "run": ["$@train#trainer.run()"],
    "finalize": ["$dist.is_initialized() and dist.destroy_process_group()"],
}


def write_training_bundle(folder: Path, seed: int = 0) -> Path:
    """The spleen layout with its train, evaluate and multi-GPU configs (three classes) and random weights."""
    import copy

    inference = copy.deepcopy(SPLEEN_INFERENCE)
    inference["network_def"] = SPLEEN_TRAIN["network_def"]
    metadata = copy.deepcopy(SPLEEN_METADATA)
    metadata["network_data_format"]["outputs"]["pred"]["channel_def"] = {"0": "background", "1": "a", "2": "b"}
    write_bundle(folder, inference, metadata, seed=seed)
    for name, config in (("train", SPLEEN_TRAIN), ("evaluate", SPLEEN_EVALUATE),
                         ("multi_gpu_train", SPLEEN_MULTI_GPU_TRAIN)):
        (folder / "configs" / f"{name}.json").write_text(json.dumps(config, indent=2))
    (folder / "configs" / "logging.conf").write_text(LOGGING_CONF)
    return folder


# The model zoo's configs/logging.conf: INFO to stdout.
LOGGING_CONF = """[loggers]
keys=root

[handlers]
keys=consoleHandler

[formatters]
keys=fullFormatter

[logger_root]
level=INFO
handlers=consoleHandler

[handler_consoleHandler]
class=StreamHandler
level=INFO
formatter=fullFormatter
args=(sys.stdout,)

[formatter_fullFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""
