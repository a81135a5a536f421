"""Clara ``config_train.json`` (the input of Clara's ``tlt-train``) mapped onto our train config.

Each Clara key either maps onto a :class:`~engines.training.trainer.TrainConfig` key or a MONAI
augmentation, is taken from the model config (loading, cropping and the point channel are
the model's own ``pre_transforms``, so training and serving stay identical), or is refused
with one message per key. Nothing is silently dropped: what is taken from elsewhere is
reported in the returned notes.
"""

from __future__ import annotations

import logging
from typing import Any

from engines.errors import ConfigError

__all__ = ["clara_to_train_config", "is_clara_train_config"]

log = logging.getLogger(__name__)

# Clara network names with the same architecture in MONAI; the network itself is the model config's.
MONAI_NETWORKS = {"SegResnet": "SegResNet", "UNet": "UNet", "Unet": "UNet"}
# Clara transforms that the model config's pre_transforms already perform.
FROM_MODEL_CONFIG = {"LoadNifti", "VolumeTo4dArray", "CropForegroundObject", "AddExtremePointsChannel",
                     "ScaleByResolution", "NormalizeNonzeroIntensities", "ScaleIntensityRange", "ConvertToChannelsFirst"}
# Keys about Clara's own runtime that have nothing to change here.
RUNTIME_KEYS = {"num_workers", "dont_load_ckpt_model", "dont_load_ts_model", "train_summary_recording_interval",
                "validate", "image_pipeline"}
PAIR = ["image", "label"]


def is_clara_train_config(data: Any) -> bool:
    """Whether a train config file is Clara's (a ``train`` section, or ``net_config``)."""
    return isinstance(data, dict) and (isinstance(data.get("train"), dict) or "net_config" in data)


def _args(spec: dict[str, Any]) -> dict[str, Any]:
    """A component's arguments: under ``args`` (Clara 2+) or beside ``name`` (Clara 1)."""
    return dict(spec.get("args") or {k: v for k, v in spec.items() if k != "name"})


def _transform(name: str, args: dict[str, Any], out: dict[str, Any], notes: list[str], problems: list[str],
               where: str) -> None:
    prob = float(args.get("probability", args.get("prob", 0.5)))
    if name == "NPRandomFlip3D":
        out["augmentations_last"] += [{"name": "RandFlipd", "args": {"keys": PAIR, "spatial_axis": axis, "prob": prob}}
                                      for axis in (0, 1, 2)]
    elif name == "NPRandomZoom3D":
        lower, upper = args.get("lower_limits", [0.8] * 3), args.get("upper_limits", [1.2] * 3)
        out["augmentations_last"].append({"name": "RandZoomd", "args": {
            "keys": PAIR, "prob": prob, "min_zoom": lower, "max_zoom": upper, "mode": ["trilinear", "nearest"],
            "keep_size": True}})
    elif name == "NPRandomRot90_XY":
        out["augmentations_last"].append({"name": "RandRotate90d",
                                          "args": {"keys": PAIR, "prob": prob, "spatial_axes": [0, 1]}})
    elif name == "ScaleIntensityOscillation":
        out["augmentations"].append({"name": "RandScaleIntensityd", "args": {
            "keys": "image", "factors": float(args.get("magnitude", 0.1)), "prob": float(args.get("probability", 1.0))}})
    elif name in FROM_MODEL_CONFIG:
        note = f"{where} ({name}): performed by the model config's pre_transforms"
        if name == "AddExtremePointsChannel":
            out["augment_before"] = "transforms.AddExtremePointsChannel"
            if "pert" in args:
                note += f"; 'pert'={args['pert']} is the model config's ExtremePointsFromLabeld 'perturbation'"
        notes.append(note)
    else:
        problems.append(f"{where}: transform '{name}' has no MONAI equivalent here")


def clara_to_train_config(data: dict[str, Any], where: str) -> dict[str, Any]:
    """Our train config (a dict to validate) from a Clara ``config_train.json``.

    Raises:
        ConfigError: one line per Clara key we have no equivalent for.
    """
    out: dict[str, Any] = {"augmentations": [], "augmentations_last": []}
    notes: list[str] = []
    problems: list[str] = []
    train = data.get("train") or {}
    direct = {"epochs": "epochs", "batch_size": "batch_size", "num_training_epoch_per_valid": "val_interval",
              "learning_rate": "learning_rate", "use_amp": "mixed_precision"}
    for key, value in data.items():
        if key in direct:
            out[direct[key]] = value
        elif key == "multi_gpu":
            notes.append("multi_gpu: run the same command under torchrun (a job's params.gpus)")
        elif key == "network_input_size":
            notes.append(f"network_input_size {value}: the crop size is the model config's 'roi'")
        elif key == "determinism":
            out["seed"] = int((value or {}).get("random_seed", 0))
        elif key in ("net_config", "train"):
            continue
        elif key in RUNTIME_KEYS:
            notes.append(f"{key}: Clara runtime setting, not needed here")
        else:
            problems.append(f"key '{key}': not a Clara train key we know")
    network = data.get("net_config") or train.get("model")
    if network:
        name = network.get("name", "?") if isinstance(network, dict) else str(network)
        if name in MONAI_NETWORKS:
            notes.append(f"network {name}: trained as the model config's 'network' ({MONAI_NETWORKS[name]} in MONAI)")
        else:
            problems.append(f"key '{'net_config' if 'net_config' in data else 'train.model'}': network '{name}' is "
                            "TensorFlow-only in Clara (define a MONAI network in the model config's 'network')")
    for key, spec in train.items():
        at = f"train.{key}"
        if key == "loss":
            name = spec.get("name")
            losses = {"Dice": "DiceLoss", "DiceLoss": "DiceLoss", "DiceCELoss": "DiceCELoss", "DiceCE": "DiceCELoss"}
            if name in losses:
                out["loss"] = losses[name]
            else:
                problems.append(f"key '{at}': loss '{name}' has no equivalent (use Dice or DiceCELoss)")
        elif key == "optimizer":
            name, args = spec.get("name"), _args(spec)
            if name not in ("Adam", "AdamW"):
                problems.append(f"key '{at}': optimizer '{name}' has no equivalent (use Adam or AdamW)")
                continue
            if "lr" in args or "learning_rate" in args:
                out["learning_rate"] = float(args.get("lr", args.get("learning_rate")))
            if name == "Adam":
                out["weight_decay"] = float(args.get("weight_decay", 0.0))
        elif key == "lr_policy":
            name, args = spec.get("name"), _args(spec)
            if name == "ReducePoly":
                out["lr_schedule"], out["poly_power"] = "poly", float(args.get("poly_power", 0.9))
            elif name in ("ReduceCosine", "CosineAnnealing", "DecayOnStep"):
                out["lr_schedule"] = "cosine"
                if name == "DecayOnStep":
                    notes.append(f"{at} DecayOnStep: replaced by a cosine schedule")
            elif name in ("ConstantLR", "Constant"):
                out["lr_schedule"] = "constant"
            else:
                problems.append(f"key '{at}': learning-rate policy '{name}' has no equivalent")
        elif key == "pre_transforms":
            for index, transform in enumerate(spec):
                _transform(transform.get("name", "?"), _args(transform), out, notes, problems, f"{at}[{index}]")
        elif key == "model":
            continue  # checked with net_config above
        elif key == "image_pipeline":
            args = _args(spec)
            if args.get("output_batch_size") or args.get("batch_size"):
                out["batch_size"] = int(args.get("output_batch_size") or args.get("batch_size"))
            notes.append(f"{at}: data loading is MONAI's (cached in memory); its batch size is kept")
        elif key in ("aux_ops", "metrics"):
            notes.append(f"{at}: validation Dice is computed through the engine instead")
        else:
            problems.append(f"key '{at}': not a Clara train key we know")
    if problems:
        raise ConfigError(f"{where}: Clara config_train.json: " + "; ".join(problems))
    for note in notes:
        log.info("%s: %s", where, note)
    out["clara_notes"] = notes
    return out
