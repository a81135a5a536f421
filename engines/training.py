"""Training from a Clara-format datalist and a train config, with MONAI.

The model config's own ``pre_transforms`` build the training pipeline (with the
train config's augmentations inserted), and validation runs the real engine on
full volumes, so a model is served exactly as it was trained and validated.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai import transforms as mt
from monai.data import CacheDataset, DataLoader
from monai.losses import DiceCELoss
from monai.utils import set_determinism
from pydantic import Field, ValidationError

from engines.backends import TorchBackend, select_device
from engines.config import ComponentSpec, ModelConfig, _Strict, describe_validation_error, load_json, load_model_config
from engines.dextr3d import Dextr3dEngine
from engines.engine import Engine
from engines.errors import ConfigError
from engines.evaluation import dice_per_label
from engines.io import read_modalities, read_volume
from engines.networks import build_network
from engines.points import extreme_points
from engines.segmentation import SegmentationEngine
from engines.transforms import build_transform

__all__ = ["TrainConfig", "load_datalist", "load_train_config", "train"]

log = logging.getLogger(__name__)


class TrainConfig(_Strict):
    """Hyper-parameters of one training run (``train_config.json``)."""

    epochs: int = Field(ge=1)
    # Length of the cosine learning-rate schedule; longer than ``epochs`` runs only its first part.
    lr_schedule_epochs: int | None = Field(None, ge=1)
    batch_size: int = Field(4, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    val_interval: int = Field(5, ge=1)
    augmentations: list[ComponentSpec] = Field(default_factory=list)
    augment_before: str | None = None
    augmentations_last: list[ComponentSpec] = Field(default_factory=list)  # after all pre-transforms
    seed: int = 0
    num_threads: int | None = Field(None, ge=1)
    max_minutes: float | None = Field(None, gt=0)
    max_train_cases: int | None = Field(None, ge=1)
    max_val_cases: int | None = Field(None, ge=1)
    save_half: bool = True
    init_weights: str | None = None  # start from these weights (fine-tuning), relative to the train config


def load_train_config(path: str | Path) -> TrainConfig:
    """Read and validate a train config file."""
    try:
        return TrainConfig.model_validate(load_json(path))
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(str(path), exc)) from None


def load_datalist(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """A Clara datalist with ``training`` and ``validation`` lists; paths made absolute.

    A case's ``image`` may list several files (modalities), stacked as channels in that order.
    """
    path = Path(path)
    data = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("training"), list):
        raise ConfigError(f"{path}: a datalist needs a 'training' list")
    resolve = lambda p: str((path.parent / p).resolve())  # noqa: E731
    resolved: dict[str, list[dict[str, Any]]] = {}
    for split in ("training", "validation"):
        items = []
        for n, item in enumerate(data.get(split, [])):
            if not isinstance(item, dict) or "image" not in item or "label" not in item:
                raise ConfigError(f"{path}: {split}[{n}] needs 'image' and 'label'")
            image = item["image"]
            if isinstance(image, list) and image and all(isinstance(p, str) for p in image):
                image = [resolve(p) for p in image]
            elif isinstance(image, str):
                image = resolve(image)
            else:
                raise ConfigError(f"{path}: {split}[{n}]: 'image' must be a path or a non-empty list of paths")
            items.append({"image": image, "label": resolve(item["label"])})
        resolved[split] = items
    return resolved


def _train_pipeline(config: ModelConfig, train_cfg: TrainConfig) -> mt.Compose:
    specs = list(config.pre_transforms)
    names = [s.name for s in specs]
    at = names.index(train_cfg.augment_before) if train_cfg.augment_before in names else len(specs)
    if train_cfg.augment_before and train_cfg.augment_before not in names:
        raise ConfigError(f"augment_before '{train_cfg.augment_before}' is not among the pre_transforms {names}")
    specs[at:at] = train_cfg.augmentations
    specs += train_cfg.augmentations_last
    steps: list[Callable] = [build_transform(s) for s in specs]
    # The annotation network learns one object: every labelled voxel.
    target = (lambda x: (x > 0).float()) if config.type == "annotation" else (lambda x: x.round().long())
    steps += [
        mt.SelectItemsd(keys=["image", "label"]),
        mt.EnsureTyped(keys=["image", "label"], track_meta=False),
        mt.Lambdad(keys="label", func=target),
    ]
    return mt.Compose(steps)


def _single_network(config: ModelConfig, config_path: Path, member: int | None) -> ModelConfig:
    """The config of the one network to train: the model itself, or one member of its ensemble."""
    members = config.members()
    if member is None and config.ensemble:
        raise ConfigError(f"{config_path} is an ensemble of {len(members)} networks: choose one with member 1..{len(members)}")
    if member is not None and not 1 <= member <= len(members):
        raise ConfigError(f"{config_path} has {len(members)} network(s): member must be 1..{len(members)}, not {member}")
    return members[(member or 1) - 1]


def _validate(engine: Engine, cases: list[dict[str, Any]]) -> list[float]:
    """Mean Dice per label over full validation volumes, through the real engine."""
    per_case = []
    for case in cases:
        volume = read_modalities(case["image"])
        truth = np.rint(read_volume(case["label"]).array).astype(np.uint8)
        if isinstance(engine, Dextr3dEngine):
            truth = (truth > 0).astype(np.uint8)
            params = {"points": extreme_points(truth > 0).tolist()}
        else:
            params = {}
        result = engine.infer(volume, params)
        per_case.append(dice_per_label(result.mask, truth, len(engine.labels)))
    return [float(v) for v in np.mean(per_case, axis=0)]


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def train(
    config_path: str | Path,
    datalist_path: str | Path,
    train_config_path: str | Path,
    output_dir: str | Path | None = None,
    device: str = "auto",
    progress: Callable[[str], None] = print,
    member: int | None = None,
) -> dict[str, Any]:
    """Train the model a model config describes; keep the best checkpoint by validation Dice.

    Writes ``<output_dir>/<basename of model_path>`` (state dict) and ``metrics.json``.
    ``output_dir`` defaults to the folder of the config's ``model_path``. For an ensemble,
    ``member`` (1-based) picks the network to train; it is validated on its own.

    Returns:
        The metrics written to ``metrics.json``.
    """
    config_path = Path(config_path)
    config = _single_network(load_model_config(config_path), config_path, member)
    if config.network is None:
        raise ConfigError(f"{config_path}: training needs a 'network' definition")
    cfg = load_train_config(train_config_path)
    datalist = load_datalist(datalist_path)
    weights_path = (config_path.parent / str(config.model_path)).resolve()
    out_dir = Path(output_dir) if output_dir else weights_path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_out = out_dir / weights_path.name

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    set_determinism(seed=cfg.seed)
    dev = select_device(device)
    train_cases = datalist["training"][: cfg.max_train_cases]
    val_cases = datalist["validation"][: cfg.max_val_cases]

    pipeline = _train_pipeline(config, cfg)
    pipeline.set_random_state(seed=cfg.seed)
    dataset = CacheDataset(train_cases, pipeline, cache_rate=1.0, num_workers=0, progress=False)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, num_workers=0, drop_last=False)

    network = build_network(config.network)
    if cfg.init_weights:
        init = (Path(train_config_path).parent / cfg.init_weights).resolve()
        network.load_state_dict({k: v.float() for k, v in torch.load(init, map_location="cpu", weights_only=True).items()})
        progress(f"initialised from {init}")
    network = network.to(dev)
    binary = config.type == "annotation"
    loss_fn = DiceCELoss(sigmoid=binary, softmax=not binary, to_onehot_y=not binary)
    optimizer = torch.optim.AdamW(network.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.lr_schedule_epochs or cfg.epochs)
    engine_cls = Dextr3dEngine if binary else SegmentationEngine
    backend = TorchBackend(network, dev)
    engine = engine_cls(config_path.stem, config, backend)

    metrics: dict[str, Any] = {
        "model_config": str(config_path),
        "datalist": str(datalist_path),
        "train_cases": len(train_cases),
        "validation_cases": len(val_cases),
        "labels": config.labels,
        "hardware": _hardware(dev),
        "train_config": cfg.model_dump(),
        "history": [],
        "best": None,
    }
    start = time.time()
    best = -1.0
    for epoch in range(1, cfg.epochs + 1):
        network.train()
        lr = optimizer.param_groups[0]["lr"]
        losses = []
        for batch in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(network(batch["image"].to(dev)), batch["label"].to(dev))
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        scheduler.step()
        entry: dict[str, Any] = {"epoch": epoch, "loss": round(float(np.mean(losses)), 5), "lr": lr,
                                 "elapsed_s": round(time.time() - start, 1)}
        out_of_time = cfg.max_minutes is not None and time.time() - start > cfg.max_minutes * 60
        if epoch % cfg.val_interval == 0 or epoch == cfg.epochs or out_of_time:
            network.eval()
            dice = _validate(engine, val_cases)
            entry["val_dice"] = [round(v, 4) for v in dice]
            entry["val_mean_dice"] = round(float(np.mean(dice)), 4)
            if entry["val_mean_dice"] > best:
                best = entry["val_mean_dice"]
                state = {k: (v.half() if cfg.save_half and v.is_floating_point() else v)
                         for k, v in network.state_dict().items()}
                torch.save(state, weights_out)
                metrics["best"] = {"epoch": epoch, "val_dice": entry["val_dice"], "val_mean_dice": best}
        metrics["history"].append(entry)
        metrics["wall_time_s"] = round(time.time() - start, 1)
        progress(json.dumps(entry))
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        if out_of_time:
            progress(f"stopping: max_minutes={cfg.max_minutes} reached at epoch {epoch}")
            break

    # Score exactly what was saved (fp16 weights reloaded as the server loads them).
    state = torch.load(weights_out, map_location="cpu", weights_only=True)
    network.load_state_dict({k: v.float() for k, v in state.items()})
    network.eval()
    dice = _validate(engine, val_cases)
    metrics["final"] = {"val_dice": [round(v, 4) for v in dice], "val_mean_dice": round(float(np.mean(dice)), 4),
                        "labels": engine.labels}
    metrics["wall_time_s"] = round(time.time() - start, 1)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    progress(json.dumps({"final": metrics["final"], "wall_time_s": metrics["wall_time_s"]}))
    return metrics

