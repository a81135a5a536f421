"""Training from a Clara-format datalist and a train config, with MONAI.

The model config's own ``pre_transforms`` build the training pipeline (with the
train config's augmentations inserted), and validation runs the real engine on
full volumes, so a model is served exactly as it was trained and validated.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from monai import transforms as mt
from monai.data import CacheDataset, DataLoader
from monai.losses import DiceCELoss, DiceLoss
from monai.utils import set_determinism
from pydantic import Field, ValidationError
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from engines.backends import TorchBackend, select_device
from engines.backends.pytorch import saved_state_dict
from engines.config.clara_train import clara_to_train_config, is_clara_train_config
from engines.config.model import (
    ComponentSpec,
    ModelConfig,
    _Strict,
    describe_validation_error,
    load_json,
    load_model_config,
)
from engines.data.datalist import load_datalist
from engines.errors import ConfigError, TrainingStopped
from engines.evaluation.scoring import score_cases
from engines.hardware import describe_device
from engines.networks import build_network
from engines.tasks.base import Engine
from engines.tasks.registry import engine_for_type
from engines.training.distributed import DistributedContext
from engines.transforms.registry import build_transform

__all__ = ["LAST_CHECKPOINT", "TrainConfig", "load_train_config", "train"]

log = logging.getLogger(__name__)

LAST_CHECKPOINT = "checkpoint_last.pt"  # full training state after the last completed epoch (or a stop)


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
    mixed_precision: bool = True  # float16 autocast and gradient scaling, on CUDA only
    loss: Literal["DiceCELoss", "DiceLoss"] = "DiceCELoss"
    lr_schedule: Literal["cosine", "poly", "constant"] = "cosine"
    poly_power: float = Field(0.9, gt=0)
    clara_notes: list[str] = Field(default_factory=list)  # how a Clara config_train.json was mapped


def load_train_config(path: str | Path) -> TrainConfig:
    """Read and validate a train config file."""
    data = load_json(path)
    if is_clara_train_config(data):
        data = clara_to_train_config(data, str(path))
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(str(path), exc)) from None


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


def _validate(engine: Engine, cases: list[dict[str, str]], dist: DistributedContext | None = None) -> list[float]:
    """Mean Dice per label over full validation volumes, through the real engine (shared across DDP ranks)."""
    scores = score_cases(engine, dist.shard(cases) if dist else cases)
    if dist:
        scores = dist.gather(scores)
    # A label absent from a case's label and prediction is not scored (NaN): left out of the mean.
    return [float(v) for v in np.nan_to_num(np.nanmean(np.asarray([s["dice"] for s in scores], dtype=float), axis=0),
                                            nan=0.0)]


def _scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    length = cfg.lr_schedule_epochs or cfg.epochs
    if cfg.lr_schedule == "poly":
        return torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=length, power=cfg.poly_power)
    if cfg.lr_schedule == "constant":
        return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=length)


class _Progress:
    """Work done (epochs and batches) and the time it took: the fraction, ETA and event payloads."""

    def __init__(self, epochs: int, batches: int, first_epoch: int, callback: Callable[[dict], None] | None) -> None:
        self.epochs, self.batches = epochs, max(batches, 1)
        self.done_at_start = (first_epoch - 1) * self.batches
        self.callback = callback
        self.start = time.time()
        self.metrics: dict[str, Any] = {}

    def fraction(self, epoch: int, batch: int) -> float:
        return min(((epoch - 1) * self.batches + batch) / (self.epochs * self.batches), 1.0)

    def report(self, event: str, epoch: int, batch: int, **metrics: Any) -> None:
        self.metrics.update({k: v for k, v in metrics.items() if v is not None})
        if self.callback is None:
            return
        done = (epoch - 1) * self.batches + batch - self.done_at_start
        left = self.epochs * self.batches - (epoch - 1) * self.batches - batch
        elapsed = time.time() - self.start
        eta = round(elapsed / done * left, 1) if done > 0 else None
        self.callback({"event": event, "epoch": epoch, "epochs": self.epochs, "batch": batch,
                       "batches": self.batches, "progress": round(self.fraction(epoch, batch), 4),
                       "eta_s": eta, "metrics": dict(self.metrics)})


def _tensorboard(out_dir: Path, progress: Callable[[str], None]):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # optional: pip install 'aiaa-server[train]'
        progress("tensorboard is not installed: no event files (pip install 'aiaa-server[train]')")
        return None
    return SummaryWriter(str(out_dir / "tensorboard"))


def train(
    config_path: str | Path,
    datalist_path: str | Path,
    train_config_path: str | Path,
    output_dir: str | Path | None = None,
    device: str = "auto",
    progress: Callable[[str], None] = print,
    member: int | None = None,
    *,
    on_progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train the model a model config describes; keep the best checkpoint by validation Dice.

    Writes ``<output_dir>/<basename of model_path>`` (best weights, a state dict), ``metrics.json``,
    ``checkpoint_last.pt`` (the full training state, for ``resume``) and TensorBoard event files
    under ``tensorboard/``. ``output_dir`` defaults to the folder of the config's ``model_path``.
    For an ensemble, ``member`` (1-based) picks the network to train; it is validated on its own.

    ``on_progress`` receives a dict per batch and per validation (epoch, batch, progress 0..1,
    ETA, latest loss and Dice). ``should_stop`` is asked at every batch boundary: when it answers
    true, the training state is checkpointed and :class:`TrainingStopped` is raised. ``resume``
    continues from ``checkpoint_last.pt`` in the output folder. Under ``torchrun`` (``WORLD_SIZE``
    > 1) the network runs as DistributedDataParallel, each rank trains and validates its share
    of the cases, losses and Dice are reduced over ranks, and only rank 0 writes.

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
    last_out = out_dir / LAST_CHECKPOINT
    if resume and not last_out.is_file():
        raise ConfigError(f"cannot resume: no {LAST_CHECKPOINT} in {out_dir}")

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    dist = DistributedContext(device)
    set_determinism(seed=cfg.seed + dist.rank)
    dev = dist.device(select_device(device))
    train_cases = datalist["training"][: cfg.max_train_cases]
    val_cases = datalist["validation"][: cfg.max_val_cases]
    if not val_cases:
        raise ConfigError(f"{datalist_path}: the datalist has no 'validation' cases to choose the best checkpoint")
    if not dist.is_main:
        progress = lambda _: None  # noqa: E731
        on_progress = None
    for note in cfg.clara_notes:
        progress(f"Clara config_train.json: {note}")

    pipeline = _train_pipeline(config, cfg)
    pipeline.set_random_state(seed=cfg.seed + dist.rank)
    dataset = CacheDataset(train_cases, pipeline, cache_rate=1.0, num_workers=0, progress=False)
    sampler = DistributedSampler(dataset, shuffle=True, seed=cfg.seed) if dist.enabled else None
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=sampler is None, sampler=sampler,
                        num_workers=0, drop_last=False)

    network = build_network(config.network)
    if cfg.init_weights and not resume:
        init = (Path(train_config_path).parent / cfg.init_weights).resolve()
        network.load_state_dict({k: v.float() for k, v in torch.load(init, map_location="cpu", weights_only=True).items()})
        progress(f"initialised from {init}")
    network = network.to(dev)
    binary = config.type == "annotation"
    loss_cls = DiceCELoss if cfg.loss == "DiceCELoss" else DiceLoss
    loss_fn = loss_cls(sigmoid=binary, softmax=not binary, to_onehot_y=not binary)
    optimizer = torch.optim.AdamW(network.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = _scheduler(optimizer, cfg)
    amp = cfg.mixed_precision and dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    engine = engine_for_type(config.type)(config_path.stem, config, TorchBackend(network, dev))
    model = DistributedDataParallel(network, device_ids=[dev.index] if dev.type == "cuda" else None) \
        if dist.enabled else network

    metrics: dict[str, Any] = {
        "model_config": str(config_path),
        "datalist": str(datalist_path),
        "train_cases": len(train_cases),
        "validation_cases": len(val_cases),
        "labels": config.labels,
        "hardware": describe_device(dev) + (f" x {dist.world_size} processes" if dist.enabled else ""),
        "train_config": cfg.model_dump(),
        "history": [],
        "best": None,
    }
    best = -1.0
    first_epoch = 1
    if resume:
        state = torch.load(last_out, map_location="cpu", weights_only=True)
        network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        metrics, best, first_epoch = state["metrics"], state["best"], state["epoch"] + 1
        progress(f"resumed from {last_out} after epoch {state['epoch']}")

    def save_last(completed_epoch: int) -> None:
        if dist.is_main:
            torch.save({"epoch": completed_epoch, "network": network.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "metrics": metrics,
                        "best": best}, last_out)

    writer = _tensorboard(out_dir, progress) if dist.is_main else None
    tracker = _Progress(cfg.epochs, len(loader), first_epoch, on_progress)
    start = time.time() - metrics.get("wall_time_s", 0.0)
    for epoch in range(first_epoch, cfg.epochs + 1):
        model.train()
        if sampler is not None:
            sampler.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        losses = []
        for batch_index, batch in enumerate(loader, start=1):
            if dist.any(should_stop is not None and should_stop()):
                save_last(epoch - 1)  # the weights so far; the interrupted epoch runs again on resume
                progress(f"stopped at epoch {epoch} batch {batch_index}: {last_out} written")
                dist.close()
                raise TrainingStopped(f"training stopped on request at epoch {epoch}; resume continues from {last_out}")
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=amp):
                loss = loss_fn(model(batch["image"].to(dev)), batch["label"].to(dev))
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            losses.append(float(loss.detach()))
            tracker.report("batch", epoch, batch_index, loss=round(float(np.mean(losses)), 5))
        scheduler.step()
        entry: dict[str, Any] = {"epoch": epoch, "loss": round(dist.mean(float(np.mean(losses))), 5), "lr": lr,
                                 "elapsed_s": round(time.time() - start, 1)}
        out_of_time = dist.any(cfg.max_minutes is not None and time.time() - start > cfg.max_minutes * 60)
        if epoch % cfg.val_interval == 0 or epoch == cfg.epochs or out_of_time:
            network.eval()
            dice = _validate(engine, val_cases, dist)
            entry["val_dice"] = [round(v, 4) for v in dice]
            entry["val_mean_dice"] = round(float(np.mean(dice)), 4)
            if entry["val_mean_dice"] > best:
                best = entry["val_mean_dice"]
                if dist.is_main:
                    torch.save(saved_state_dict(network.state_dict(), cfg.save_half), weights_out)
                metrics["best"] = {"epoch": epoch, "val_dice": entry["val_dice"], "val_mean_dice": best}
        metrics["history"].append(entry)
        metrics["wall_time_s"] = round(time.time() - start, 1)
        tracker.report("epoch", epoch, tracker.batches, loss=entry["loss"], dice=entry.get("val_mean_dice"))
        if writer is not None:
            writer.add_scalar("train/loss", entry["loss"], epoch)
            writer.add_scalar("train/lr", lr, epoch)
            if "val_mean_dice" in entry:
                writer.add_scalar("val/mean_dice", entry["val_mean_dice"], epoch)
            writer.flush()
        progress(json.dumps(entry))
        save_last(epoch)
        if dist.is_main:
            (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        if out_of_time:
            progress(f"stopping: max_minutes={cfg.max_minutes} reached at epoch {epoch}")
            break

    # Score exactly what was saved (fp16 weights reloaded as the server loads them).
    dist.barrier()
    state = torch.load(weights_out, map_location="cpu", weights_only=True)
    network.load_state_dict({k: v.float() for k, v in state.items()})
    network.eval()
    dice = _validate(engine, val_cases, dist)
    metrics["final"] = {"val_dice": [round(v, 4) for v in dice], "val_mean_dice": round(float(np.mean(dice)), 4),
                        "labels": engine.labels}
    metrics["wall_time_s"] = round(time.time() - start, 1)
    if dist.is_main:
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if writer is not None:
        writer.add_scalar("val/final_mean_dice", metrics["final"]["val_mean_dice"], cfg.epochs)
        writer.close()
    progress(json.dumps({"final": metrics["final"], "wall_time_s": metrics["wall_time_s"]}))
    dist.close()
    return metrics
