"""``aiaa export --format bundle``: one of our segmentation models as a MONAI bundle folder.

The bundle holds ``configs/metadata.json`` (inputs, outputs and labels), ``configs/inference.json``
(our pre-processing, inferer and post-processing written with MONAI's own transforms, plus the
usual dataset, evaluator and ``SaveImaged`` so that ``python -m monai.bundle run`` writes the masks),
``models/model.pt`` (the weights), ``docs/README.md`` and ``LICENSE``. Only what MONAI reproduces
exactly is exported: a transform of ours without a MONAI equivalent, an ensemble without a chosen
member, or test-time flips are refused with the reason.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from engines.backends.pytorch import load_state_dict
from engines.config.model import ComponentSpec, ModelConfig, load_model_config
from engines.errors import ConfigError
from engines.networks import build_network
from engines.transforms.registry import ALIASES, REGISTRY

__all__ = ["export_bundle", "monai_transforms"]

# Our loaders: MONAI's LoadImaged reads the same voxels in the same [i, j, k] order.
_LOADERS = {"LoadVolumed", "LoadImaged", "transforms.LoadNifty", "transforms.LoadNifti", "LoadNifti", "LoadNifty"}
# Ours only for speed: the same result as the MONAI transform named here.
_MONAI_TWINS = {"ScaleIntensityRangePercentilesd": "ScaleIntensityRangePercentilesd",
                "KeepLargestConnectedComponentd": "KeepLargestConnectedComponentd",
                "transforms.KeepLargestConnectedComponent": "KeepLargestConnectedComponentd"}
# Arguments that list one value per key, filtered with the keys.
_PER_KEY_ARGS = ("mode", "modes", "padding_mode", "align_corners", "dtype")
_IMAGE_KEY = "image"
_PRED_KEY = "pred"


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _monai_transform(spec: ComponentSpec, key: str) -> dict[str, Any] | None:
    """One of our transform specs as a MONAI config item applied to ``key`` (``None``: not for that key)."""
    args = dict(spec.args)
    if "fields" in args and "keys" not in args:
        args["keys"] = args.pop("fields")
    if spec.name in _LOADERS:
        target, args = "LoadImaged", {"keys": args.get("keys", key), "image_only": True}
    elif spec.name in ALIASES:
        target, defaults = ALIASES[spec.name]
        args = {**defaults, **args}
    elif spec.name in _MONAI_TWINS:
        target = _MONAI_TWINS[spec.name]
    elif spec.name in REGISTRY:
        raise ConfigError(f"transform '{spec.name}' is our own (MONAI has no transform that gives the same "
                          "result): this model cannot be exported as a bundle")
    else:
        target = spec.name
    keys = _as_list(args.get("keys", key))
    if key not in keys:
        return None
    index = keys.index(key)
    for name in _PER_KEY_ARGS:
        if isinstance(args.get(name), (list, tuple)) and len(args[name]) == len(keys) and len(keys) > 1:
            args[name] = args[name][index]
    args["keys"] = key
    args.pop("allow_missing_keys", None)
    return {"_target_": target, **args}


def monai_transforms(specs: list[ComponentSpec], key: str) -> list[dict[str, Any]]:
    """Our transform chain as MONAI config items for ``key`` (transforms of other keys, e.g. labels, dropped).

    Raises:
        ConfigError: a transform MONAI cannot reproduce.
    """
    items = [_monai_transform(spec, key) for spec in specs]
    return [item for item in items if item is not None]


def _single_network(config: ModelConfig, member: int | None, where: str) -> ModelConfig:
    members = config.members()
    if member is None:
        if len(members) > 1:
            raise ConfigError(f"{where} is an ensemble of {len(members)} networks; a bundle serves one network: "
                              f"choose one with --member 1..{len(members)}")
        return members[0]
    if not 1 <= member <= len(members):
        raise ConfigError(f"{where} has {len(members)} network(s): member must be 1..{len(members)}, not {member}")
    return members[member - 1]


def _inferer(config: ModelConfig) -> dict[str, Any]:
    args = dict(config.inferer.args)
    if config.inferer.name == "SlidingWindowInferer":
        args.setdefault("sw_batch_size", config.batch_size)
    return {"_target_": config.inferer.name, **args}


def _inference_config(config: ModelConfig, pre: list[dict[str, Any]], post: list[dict[str, Any]]) -> dict[str, Any]:
    """A current-generation (initialize/run) inference config in the layout of the model zoo's spleen bundle."""
    assert config.network is not None
    return {
        "imports": ["$import glob", "$import os"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "$@bundle_root + '/data'",
        "datalist": "$list(sorted(glob.glob(@dataset_dir + '/*.nii.gz')))",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": {"_target_": config.network.name, **config.network.args},
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": pre},
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]",
                    "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": _inferer(config),
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "AsDiscreted", "keys": _PRED_KEY, "argmax": True},
            *post,
            {"_target_": "SaveImaged", "keys": _PRED_KEY, "output_dir": "@output_dir", "output_postfix": "seg",
             "output_dtype": "$numpy.uint8", "resample": False, "separate_folder": False},
        ]},
        "handlers": [{"_target_": "StatsHandler", "iteration_log": False}],
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
                      "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing",
                      "val_handlers": "@handlers", "amp": False},
        "checkpointloader": {"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/model.pt'",
                             "load_dict": {"model": "@network"}},
        "initialize": ["$@checkpointloader(@evaluator)"],
        "run": ["$@evaluator.run()"],
    }


def _metadata(name: str, config: ModelConfig, in_channels: int, out_channels: int) -> dict[str, Any]:
    import monai
    import numpy

    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
                  "meta_schema_20220324.json",
        "version": f"{config.version}.0.0" if config.version.isdigit() else config.version,
        "changelog": {"1.0.0": f"exported by aiaa export --format bundle from model '{name}' version "
                               f"{config.version}"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": numpy.__version__,
        "optional_packages_version": {"nibabel": _version("nibabel"), "pytorch-ignite": _version("ignite")},
        "name": name,
        "task": config.description or name,
        "description": config.description or f"{name}: automatic segmentation of {', '.join(config.labels)}",
        "authors": "exported by aiaa-server",
        "copyright": "see LICENSE",
        "intended_use": "Research and annotation assistance; not for diagnostic use",
        "network_data_format": {
            "inputs": {_IMAGE_KEY: {
                "type": "image", "format": "magnitude", "num_channels": in_channels, "spatial_shape": ["*", "*", "*"],
                "dtype": "float32", "value_range": [], "is_patch_data": False,
                "channel_def": {str(i): ("image" if in_channels == 1 else f"channel {i}") for i in range(in_channels)},
            }},
            "outputs": {_PRED_KEY: {
                "type": "image", "format": "segmentation", "num_channels": out_channels,
                "spatial_shape": ["*", "*", "*"], "dtype": "float32", "value_range": [0, 1], "is_patch_data": False,
                "channel_def": {"0": "background", **{str(i + 1): label for i, label in enumerate(config.labels)}},
            }},
        },
    }


def _version(module: str) -> str:
    try:
        return str(__import__(module).__version__)
    except (ImportError, AttributeError):
        return "not installed"


def _readme(name: str, config: ModelConfig, in_channels: int, card: bool) -> str:
    labels = ", ".join(f"{i + 1} {label}" for i, label in enumerate(config.labels))
    channels = "one image" if in_channels == 1 else f"one 4D image with {in_channels} channels along the 4th axis"
    return f"""# {name} (MONAI bundle exported by aiaa-server)

{config.description or 'Automatic segmentation.'}

- Input: {channels} (NIfTI), read in its own voxel order; output: a label map on the input's grid
  ({labels}; 0 background).
- The pre-processing, inferer and post-processing are the served model's, written with MONAI
  transforms; the weights are `models/model.pt` (a state dict of `network_def`).
{'- The model card it was exported with is `docs/MODEL_CARD.md`.' if card else ''}

## Run it

Put the images in `data/` (`*.nii.gz`), or point `dataset_dir` elsewhere, then:

```
python -m monai.bundle run --config_file configs/inference.json --meta_file configs/metadata.json \\
    --bundle_root . --dataset_dir /path/to/images
```

The masks land in `eval/` (`<image>_seg.nii.gz`). The same folder is served by aiaa-server with a
pool entry `{{"name": "{name}", "bundle": "<this folder>"}}`.

Not for diagnostic use.
"""


_LICENSE = """This bundle was exported by aiaa-server (Apache License 2.0).

The configuration files are released under the Apache License, Version 2.0
(https://www.apache.org/licenses/LICENSE-2.0).

The weights in models/ carry the licence of the data they were trained on{card}.
"""


def export_bundle(config_path: str | Path, output: str | Path, member: int | None = None,
                  name: str | None = None) -> dict[str, Any]:
    """Write the bundle of the segmentation model ``config_path`` into the new folder ``output``.

    Returns a short report: the folder, the files written and what was exported.

    Raises:
        ConfigError: the folder exists, the model is not one network of ours that MONAI can
            reproduce (annotation models, ensembles without ``member``, test-time flips, our own
            transforms), or its weights do not load.
    """
    config_path = Path(config_path)
    output = Path(output)
    name = name or config_path.stem
    where = str(config_path)
    config = load_model_config(config_path)
    if config.type != "segmentation":
        raise ConfigError(f"{where}: only segmentation models become bundles (a '{config.type}' model takes "
                          "points, which a bundle's inference config has no place for)")
    if config.tta_flips:
        raise ConfigError(f"{where}: test-time flips (tta_flips) have no MONAI bundle equivalent here")
    single = _single_network(config, member, where)
    if single.network is None or single.model_path is None:
        raise ConfigError(f"{where}: a bundle needs the PyTorch checkpoint and its 'network' definition")
    if output.exists():
        raise ConfigError(f"{output} exists: export into a new folder")
    pre = monai_transforms(single.pre_transforms, _IMAGE_KEY)
    if not pre or pre[0]["_target_"] != "LoadImaged":
        pre.insert(0, {"_target_": "LoadImaged", "keys": _IMAGE_KEY, "image_only": True})
    post = monai_transforms(single.post_transforms, _PRED_KEY)
    in_channels = int(single.network.args.get("in_channels", 1))
    out_channels = int(single.network.args.get("out_channels", len(config.labels) + 1))
    if out_channels > len(config.labels) + 1:
        raise ConfigError(f"{where}: the network has {out_channels} outputs for {len(config.labels)} labels; our "
                          "server zeroes the extra classes, a bundle would not")

    weights_path = (config_path.parent / single.model_path).resolve()
    state = load_state_dict(weights_path)
    network = build_network(single.network)
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(f"{weights_path}: weights do not fit network '{single.network.name}': {exc}") from None

    tmp = output.with_name(output.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    for sub in ("configs", "models", "docs"):
        (tmp / sub).mkdir(parents=True)
    (tmp / "configs" / "inference.json").write_text(json.dumps(_inference_config(single, pre, post), indent=4) + "\n")
    (tmp / "configs" / "metadata.json").write_text(
        json.dumps(_metadata(name, single, in_channels, out_channels), indent=4) + "\n")
    torch.save(network.state_dict(), tmp / "models" / "model.pt")
    card = weights_path.parent / "MODEL_CARD.md"
    if not card.is_file():
        card = weights_path.parent.parent / "MODEL_CARD.md"
    if card.is_file():
        shutil.copyfile(card, tmp / "docs" / "MODEL_CARD.md")
    (tmp / "docs" / "README.md").write_text(_readme(name, single, in_channels, card.is_file()))
    (tmp / "LICENSE").write_text(_LICENSE.format(card=" (see docs/MODEL_CARD.md)" if card.is_file() else ""))
    tmp.rename(output)
    files = sorted(str(p.relative_to(output)) for p in output.rglob("*") if p.is_file())
    return {"output": str(output), "format": "bundle", "model": name, "version": config.version,
            "member": member, "files": files}
