"""Training an interactive (``deepgrow``) model with simulated interactions, on any labelled structure.

Per sample: pick a dataset (weighted), a structure of it (uniformly: one label or a union of
labels), a training case that has it, and sometimes one connected component of it; simulate a
first prompt (2D or 3D box, extreme points, a few positive points, a scribble or a lasso; jittered),
then 0..``max_rounds`` corrective rounds in which the network being trained predicts through the
shared :func:`engines.tasks.interaction.predict_step` and a click is placed from its own errors (the
protocol's error-component rule, :func:`engines.evaluation.interactive.error_click`, sometimes a
random voxel of that component). The training pair is the shared
:func:`engines.transforms.prompts.encode` of the crop that the next step would look at, with the
previous mask as input, and the object resampled to the ROI as target.

Datasets are interactive datalists (:func:`engines.evaluation.interactive.load_interactive_datalist`): a Clara datalist plus
``dataset`` (a name) and ``structures`` (name -> label values; absent: every label value, and
their union). Only their ``training`` cases are trained on; ``validation`` cases are held out.
Volumes are read once, normalised with :func:`engines.transforms.prompts.normalise_volume` and
kept in memory.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from pydantic import Field, ValidationError
from scipy import ndimage

from engines.backends.base import select_device
from engines.backends.pytorch import load_state_dict, saved_state_dict
from engines.config.model import _Strict, describe_validation_error, load_json, load_model_config
from engines.errors import ConfigError, TrainingStopped
from engines.evaluation.interactive import (
    InteractiveDatalist,
    ObjectSpec,
    centre_voxel,
    extreme_points,
    interactive_settings,
    largest_error,
    largest_slice_box,
    load_interactive_datalist,
    read_case,
    run_protocol,
    validation_objects,
)
from engines.hardware import describe_device
from engines.inferers import flip_averaged
from engines.networks import build_network
from engines.tasks.interaction import autocast_in, network_callable, predict_step
from engines.training.appearance import AppearanceAugmentation
from engines.training.simulation_workers import SimulationWorkers
from engines.training.sources import Source, load_sources, load_sources_pack
from engines.training.trainer import LAST_CHECKPOINT
from engines.transforms.prompts import Prompt, crop_box, encode, mask_extent

__all__ = [
    "FIRST_PROMPTS",
    "InteractiveTrainConfig",
    "Source",
    "gradient_step",
    "held_out_objects",
    "is_interactive_train_config",
    "learning_rate",
    "load_sources",
    "network_callable",
    "simulate_first_prompt",
    "train_interactive",
    "training_click",
    "training_datalists",
]

log = logging.getLogger(__name__)

FIRST_PROMPTS = ("box2d", "box3d", "extreme_points", "points", "scribble", "lasso")
# The last weights as the served model.pt is saved (fp16 unless save_half is off), beside each checkpoint,
# so that a later stage's init_weights or an evaluation of a run that is not over can name them.
LAST_WEIGHTS = "model_last.pt"


class DatasetRef(_Strict):
    """One interactive datalist to train on, and how often its objects are sampled."""

    datalist: str
    weight: float = Field(1.0, gt=0)


class InteractiveTrainConfig(_Strict):
    """Hyper-parameters of an interactive training run (a train config with ``"interactive": true``)."""

    interactive: bool = True
    datasets: list[DatasetRef] = Field(default_factory=list)  # paths relative to the train config
    exclude_datasets: list[str] = Field(default_factory=list)  # leave-one-family-out runs
    batch_size: int = Field(4, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    min_learning_rate: float = Field(1e-5, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    # Cosine schedule over this much training time (minutes), so a wall-clock budget always anneals.
    schedule_minutes: float = Field(60.0, gt=0)
    # Cosine schedule over this many steps instead (warm-up by steps too): runs that must be compared
    # at equal steps, whatever the CPU's speed.
    schedule_steps: int | None = Field(None, ge=1)
    warmup_steps: int = Field(40, ge=0)
    max_minutes: float | None = Field(None, gt=0)
    max_steps: int | None = Field(None, ge=1)
    checkpoint_minutes: float = Field(5.0, gt=0)
    max_rounds: int = Field(3, ge=0)  # corrective rounds simulated before a training pair
    first_prompts: list[str] = Field(default_factory=lambda: list(FIRST_PROMPTS))
    component_probability: float = Field(0.15, ge=0, le=1)  # train on one connected component
    # Thick-slice stacks (:func:`as_thick_slices`): this share of the samples has its axial slices averaged
    # 2 to 8 at a time, half of those with the spacing lost, as thin cardiac and prostate MR stacks are at
    # many sites. 0 (off) for the runs before it.
    thick_slice_probability: float = Field(0.0, ge=0, le=1)
    # Appearance changes (:class:`AppearanceAugmentation`: histogram shift, gamma, bias field, blur, noise,
    # inversion) of this share of the training pairs' images, for structures seen on other scanners and
    # sequences. 0 (off) for the runs before it.
    appearance_probability: float = Field(0.0, ge=0, le=1)
    min_object_voxels: int = Field(20, ge=1)
    val_objects_per_dataset: int = Field(4, ge=0)
    val_clicks: int = Field(2, ge=0)
    max_cases_per_dataset: int | None = Field(None, ge=1)
    num_threads: int | None = Field(None, ge=1)
    seed: int = 0
    save_half: bool = True
    init_weights: str | None = None  # fine-tuning: start from these weights (relative to the train config)
    # The training volumes from a sources pack (engines.training.sources) instead of the datalists'
    # files: training where the datasets aren't (relative to the train config). Validation still reads files.
    sources_pack: str | None = None
    device: str = "auto"  # where the gradient steps run: auto (CUDA when present), cpu or cuda
    # Processes simulating the interactions (0: in the training process). Each holds a copy of the network,
    # refreshed every weights_sync_seconds, on the training device when it can reach it.
    workers: int = Field(0, ge=0)
    weights_sync_seconds: float = Field(5.0, gt=0)
    # bf16: the gradient steps' forward pass and the simulated rounds compute in bfloat16 under autocast
    # (weights, optimiser and loss stay fp32); faster on CPUs with AVX512_BF16 or AMX and on recent GPUs.
    # Held-out checks always run as served, in fp32.
    precision: Literal["fp32", "bf16"] = "fp32"

    @property
    def autocast(self) -> torch.dtype | None:
        """The autocast dtype of ``precision`` (``None``: plain fp32)."""
        return torch.bfloat16 if self.precision == "bf16" else None


def is_interactive_train_config(path: str | Path) -> bool:
    """Whether a train config file is an interactive one (``"interactive": true``)."""
    data = load_json(path)
    return isinstance(data, dict) and data.get("interactive") is True


def load_interactive_train_config(path: str | Path) -> InteractiveTrainConfig:
    """Read and validate an interactive train config."""
    try:
        return InteractiveTrainConfig.model_validate(load_json(path))
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(str(path), exc)) from None


def _distinct_names(lists: Sequence[InteractiveDatalist]) -> list[InteractiveDatalist]:
    """The datalists, a repeated dataset name numbered (``acdc``, ``acdc_2``): each keeps its own sampling weight
    (a fine-tune's datalist beside the ones the model was trained on often shares their name)."""
    seen: dict[str, int] = {}
    out = []
    for dl in lists:
        seen[dl.dataset] = seen.get(dl.dataset, 0) + 1
        out.append(dl if seen[dl.dataset] == 1 else replace(dl, dataset=f"{dl.dataset}_{seen[dl.dataset]}"))
    return out


def training_datalists(cfg: InteractiveTrainConfig, base: Path,
                       datalists: Sequence[str | Path] | None = None) -> tuple[list[InteractiveDatalist], dict[str, float]]:
    """The datalists a run trains on (``datalists``, else the config's ``datasets`` relative to ``base``), without
    the excluded families, repeated names numbered, and each dataset's sampling weight."""
    refs = [DatasetRef(datalist=str(p)) for p in datalists] if datalists else cfg.datasets
    if not refs:
        raise ConfigError("no 'datasets' to train on (and no datalist given)")
    lists = [load_interactive_datalist(Path(r.datalist) if Path(r.datalist).is_absolute() else base / r.datalist)
             for r in refs]
    kept = [(dl, r.weight) for dl, r in zip(lists, refs) if dl.dataset not in cfg.exclude_datasets]
    lists = _distinct_names([dl for dl, _ in kept])
    return lists, {dl.dataset: w for dl, (_, w) in zip(lists, kept)}


# ---------------------------------------------------------------------------------------------
# Prompt simulation


def _jitter_box(lo: np.ndarray, hi: np.ndarray, shape: Sequence[int], rng: np.random.Generator, amount: float,
                axes: Sequence[int] = (0, 1, 2)) -> tuple[tuple[int, ...], tuple[int, ...]]:
    lo, hi = lo.astype(np.int64).copy(), hi.astype(np.int64).copy()
    for axis in axes:
        j = max(1, int(np.rint(amount * (hi[axis] - lo[axis])))) if amount > 0 else 0
        if j:
            lo[axis] += int(rng.integers(-j, j + 1))
            hi[axis] += int(rng.integers(-j, j + 1))
    lo = np.clip(lo, 0, np.asarray(shape) - 1)
    hi = np.clip(np.maximum(hi, lo + 1), 1, shape)
    return tuple(int(v) for v in lo), tuple(int(v) for v in hi)


def _weighted_slice(truth: np.ndarray, rng: np.random.Generator) -> int:
    areas = truth.reshape(-1, truth.shape[2]).sum(0).astype(np.float64)
    return int(rng.choice(len(areas), p=areas / areas.sum()))


def _points_inside(truth: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` voxels of the object, away from its boundary where it is thick enough."""
    lo, hi = mask_extent(truth)
    sub = truth[tuple(slice(a, b) for a, b in zip(lo, hi))]
    dist = ndimage.distance_transform_edt(np.pad(sub, 1))[1:-1, 1:-1, 1:-1]
    inner = np.argwhere(dist >= 0.5 * dist.max())  # the inner half: where people click
    return (inner[rng.choice(len(inner), size=min(count, len(inner)), replace=False)] + lo).astype(np.int32)


def simulate_first_prompt(kind: str, truth: np.ndarray, rng: np.random.Generator, jitter: float = 0.05) -> Prompt:
    """A first prompt of ``kind`` (:data:`FIRST_PROMPTS`) for the object ``truth``, positions jittered.

    ``jitter`` is the largest box-face shift as a fraction of the object's extent (at least one
    voxel when positive); extreme points move by about 1 voxel.
    """
    shape = truth.shape
    if kind == "box3d":
        lo, hi = mask_extent(truth)
        return Prompt("box", box=_jitter_box(lo, hi, shape, rng, jitter))
    if kind == "box2d":
        box = largest_slice_box(truth).box if rng.random() < 0.5 else None
        if box is None:  # another slice of the object, larger slices more often
            k = _weighted_slice(truth, rng)
            lo2, hi2 = mask_extent(truth[:, :, k])
            box = ((int(lo2[0]), int(lo2[1]), k), (int(hi2[0]), int(hi2[1]), k + 1))
        return Prompt("box", box=_jitter_box(np.asarray(box[0]), np.asarray(box[1]), shape, rng, jitter, axes=(0, 1)))
    if kind == "extreme_points":
        points = extreme_points(truth).astype(np.float64)
        if jitter > 0:
            points += rng.normal(0, 1.0, points.shape)
        return Prompt("extreme_points", voxels=np.clip(np.rint(points), 0, np.asarray(shape) - 1).astype(np.int32))
    if kind == "points":
        return Prompt("point", voxels=_points_inside(truth, int(rng.integers(1, 4)), rng))
    if kind in ("scribble", "lasso"):
        from skimage.morphology import skeletonize

        k = _weighted_slice(truth, rng)
        plane = truth[:, :, k]
        if kind == "lasso":  # a closed contour drawn around the object, filled
            grown = ndimage.binary_dilation(plane, iterations=int(rng.integers(0, 3))) if jitter > 0 else plane
            filled = ndimage.binary_fill_holes(grown)
            ij = np.argwhere(filled)
            return Prompt("lasso", voxels=np.column_stack([ij, np.full(len(ij), k)]).astype(np.int32))
        line = np.argwhere(skeletonize(plane))
        if len(line) == 0:
            return Prompt("point", voxels=centre_voxel(truth)[None].astype(np.int32))
        if jitter > 0 and len(line) > 4:  # a stroke along part of the medial line
            keep = max(3, int(len(line) * rng.uniform(0.4, 1.0)))
            line = line[rng.permutation(len(line))[:keep]]
        return Prompt("scribble", voxels=np.column_stack([line, np.full(len(line), k)]).astype(np.int32))
    raise ConfigError(f"unknown first prompt '{kind}': choose among {', '.join(FIRST_PROMPTS)}")


def training_click(prediction: np.ndarray | None, truth: np.ndarray, spacing: Sequence[float],
                   rng: np.random.Generator, centre_probability: float = 0.6) -> Prompt | None:
    """A corrective click in the largest error component: mostly at its centre (the protocol's rule), else anywhere in it.

    The centre of a large component (bounding box over 64^3 voxels, early in training) is taken
    on a 2x subsampled grid: the exact transform of such regions costs more than a training step.
    """
    found = largest_error(prediction, truth)
    if found is None:
        return None
    component, lo = found
    if rng.random() < centre_probability:
        if component.size > 64 ** 3:
            voxel = centre_voxel(component[::2, ::2, ::2], spacing) * 2  # a voxel of the component itself
        else:
            voxel = centre_voxel(component, spacing)
    else:
        points = np.argwhere(component)
        voxel = points[rng.integers(len(points))]
    voxel = np.asarray(voxel) + lo
    return Prompt("point", positive=bool(truth[tuple(voxel)]), voxels=voxel[None].astype(np.int32))


# ---------------------------------------------------------------------------------------------
# Training


def _target(truth: np.ndarray, lo: np.ndarray, hi: np.ndarray, roi: Sequence[int]) -> np.ndarray:
    crop = truth[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))].astype(np.float32)
    t = torch.from_numpy(crop)[None, None]
    return F.interpolate(t, size=tuple(roi), mode="trilinear", align_corners=False)[0, 0].numpy()


THICK_SLICE_FACTORS = (2, 8)  # slices averaged into one, lowest and highest


def as_thick_slices(source: Source, truth: np.ndarray, rng: np.random.Generator,
                    min_voxels: int = 20) -> tuple[Source, np.ndarray]:
    """The sample as a thick-slice stack: every ``f`` axial slices (2 to 8, from a random offset) averaged
    into one, as a thick acquisition's partial volume does; labels and the object from each block's
    middle slice; the axial spacing ``f`` times larger or, half the time, the whole spacing lost (the
    identity affine's 1 mm, as in stacks whose conversion dropped it). ``(source, truth)`` unchanged when
    the object would keep fewer than ``min_voxels`` voxels or 3 slices."""
    depth = np.flatnonzero(truth.any(axis=(0, 1)))
    extent = int(depth[-1] - depth[0] + 1) if depth.size else 0
    factor = int(rng.integers(THICK_SLICE_FACTORS[0], THICK_SLICE_FACTORS[1] + 1))
    factor = min(factor, extent // 3, source.image.shape[2] // 3)
    if factor < THICK_SLICE_FACTORS[0]:
        return source, truth
    offset = int(rng.integers(factor))
    blocks = (source.image.shape[2] - offset) // factor
    end = offset + blocks * factor
    middle = slice(offset + factor // 2, end, factor)
    thick_truth = truth[:, :, middle]
    if thick_truth.sum() < min_voxels:
        return source, truth
    image = source.image[:, :, offset:end]
    image = image.reshape(*image.shape[:2], blocks, factor).mean(axis=3, dtype=np.float32)
    sx, sy, sz = source.spacing
    spacing = (1.0, 1.0, 1.0) if rng.random() < 0.5 else (sx, sy, sz * factor)
    thick = replace(source, image=image, label=source.label[:, :, middle], spacing=spacing, _masks={})
    return thick, np.ascontiguousarray(thick_truth)


@dataclass
class Sampler:
    """Balanced objects: a dataset by weight, a structure uniformly, then a case that has it; sometimes one
    connected component of it, sometimes as a thick-slice stack (:func:`as_thick_slices`)."""

    sources: list[Source]
    weights: dict[str, float]
    rng: np.random.Generator
    component_probability: float = 0.15
    min_voxels: int = 20
    thick_slice_probability: float = 0.0
    _index: dict[str, dict[str, list[int]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for n, source in enumerate(self.sources):
            for structure in source.structures:
                self._index.setdefault(source.dataset, {}).setdefault(structure, []).append(n)
        self.datasets = sorted(self._index)
        w = np.array([self.weights.get(d, 1.0) for d in self.datasets], np.float64)
        self.p = w / w.sum()

    def sample(self) -> tuple[Source, str, np.ndarray]:
        """``(source, structure, object mask)``."""
        source, structure, truth = self._sample_object()
        # Drawn only when on, so that runs without thick slices keep their random streams.
        if self.thick_slice_probability and self.rng.random() < self.thick_slice_probability:
            source, truth = as_thick_slices(source, truth, self.rng, self.min_voxels)
        return source, structure, truth

    def _sample_object(self) -> tuple[Source, str, np.ndarray]:
        dataset = self.datasets[int(self.rng.choice(len(self.datasets), p=self.p))]
        structures = sorted(self._index[dataset])
        structure = structures[int(self.rng.integers(len(structures)))]
        candidates = self._index[dataset][structure]
        source = self.sources[candidates[int(self.rng.integers(len(candidates)))]]
        truth = source.mask(structure)
        if self.rng.random() < self.component_probability:
            labels, count = ndimage.label(truth, structure=np.ones((3, 3, 3), bool))
            if count > 1:
                sizes = np.bincount(labels.ravel())[1:]
                big = np.flatnonzero(sizes >= self.min_voxels) + 1
                if len(big) > 1:
                    return source, f"{structure}:component", labels == int(self.rng.choice(big))
        return source, structure, truth


def make_example(network: Callable[[np.ndarray], np.ndarray], source: Source, truth: np.ndarray,
                 rng: np.random.Generator, roi: Sequence[int], settings: dict[str, Any], first_prompts: Sequence[str],
                 max_rounds: int) -> tuple[np.ndarray, np.ndarray, int]:
    """One training pair ``(input (C, *roi), target (*roi), rounds)`` after simulated corrective rounds."""
    kind = first_prompts[int(rng.integers(len(first_prompts)))]
    prompts = [simulate_first_prompt(kind, truth, rng)]
    mask = None
    rounds = 0 if rng.random() < 0.35 or max_rounds < 1 else int(rng.integers(1, max_rounds + 1))
    done = 0
    # Simulated rounds skip the zoom-out (one forward pass each); the training crop zooms at random instead.
    simulate = {**settings, "max_zooms": 0}
    for _ in range(rounds):
        mask = predict_step(network, source.image, source.spacing, prompts, mask, roi, **simulate).mask
        click = training_click(mask, truth, source.spacing, rng)
        if click is None:
            break
        prompts.append(click)
        done += 1
    zoom = 1.0 if rng.random() < 0.8 else float(rng.uniform(1.2, 1.8))
    lo, hi = crop_box(source.image.shape, source.spacing, prompts, mask, margin=settings["margin"],
                      min_size_mm=settings["min_size_mm"], zoom=zoom)
    return encode(source.image, mask, prompts, lo, hi, roi), _target(truth, lo, hi, roi), done


def _augment(x: np.ndarray, y: np.ndarray, rng: np.random.Generator,
             appearance: AppearanceAugmentation | None = None) -> tuple[np.ndarray, np.ndarray]:
    x = x.copy()
    if appearance is not None:
        x[0] = appearance(x[0])
    x[0] = x[0] * rng.uniform(0.85, 1.15) + rng.uniform(-0.15, 0.15)
    for axis in range(3):
        if rng.random() < 0.5:
            x, y = np.flip(x, axis + 1), np.flip(y, axis)
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def gradient_step(network: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable, x: torch.Tensor,
                  y: torch.Tensor, autocast: torch.dtype | None = None) -> float:
    """One optimiser step on a batch; the forward pass under ``autocast`` when given, the loss in fp32. The loss."""
    network.train()
    optimizer.zero_grad(set_to_none=True)
    with autocast_in(x.device, autocast):
        logits = network(x)
    loss = loss_fn(logits.float(), y)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def learning_rate(cfg: InteractiveTrainConfig, minutes: float, steps: int = 0) -> float:
    """The learning rate: warm-up, then cosine over ``schedule_steps`` steps if set, else ``schedule_minutes``."""
    if cfg.schedule_steps is not None:
        t = min(steps / cfg.schedule_steps, 1.0)
        warm = min(1.0, 0.2 + 0.8 * steps / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    else:
        t = min(minutes / cfg.schedule_minutes, 1.0)
        warm = min(1.0, 0.2 + minutes / 2.0)  # two minutes of warm-up
    return warm * (cfg.min_learning_rate + 0.5 * (cfg.learning_rate - cfg.min_learning_rate) * (1 + math.cos(math.pi * t)))


def validate(network: Callable[[np.ndarray], np.ndarray], objects: Sequence[ObjectSpec], roi: Sequence[int],
             settings: dict[str, Any], clicks: int, cache: dict[str, tuple] | None = None) -> dict[str, float]:
    """Mean Dice after the 2D box and after ``clicks`` clicks, per dataset, on held-out objects."""
    cache = {} if cache is None else cache
    scores: dict[str, list[tuple[float, float]]] = {}
    for spec in objects:
        if spec.image not in cache:
            cache[spec.image] = read_case(spec.image, spec.label)
        image, label, spacing = cache[spec.image]
        steps = run_protocol(network, image, spacing, np.isin(label, spec.values), roi, variant="box",
                             n_clicks=clicks, interactive=settings)
        scores.setdefault(spec.dataset, []).append((steps[0][1], steps[-1][1]))
    out = {}
    for dataset, values in scores.items():
        out[f"{dataset}_box"] = round(float(np.mean([v[0] for v in values])), 4)
        out[f"{dataset}_final"] = round(float(np.mean([v[1] for v in values])), 4)
    out["mean_final"] = round(float(np.mean([v[1] for vs in scores.values() for v in vs])), 4) if scores else 0.0
    return out


def held_out_objects(datalist: InteractiveDatalist, count: int, min_voxels: int) -> list[ObjectSpec]:
    """The ``count`` validation objects of a datalist that training checks itself on (the same every run)."""
    if count == 0:  # without reading the validation labels (a run from a sources pack may not have them)
        return []
    objects = validation_objects(datalist, min_voxels)
    picked = np.random.default_rng(0).permutation(len(objects))[:count]
    return [objects[i] for i in sorted(picked)]


def train_interactive(
    config_path: str | Path,
    train_config_path: str | Path,
    datalists: Sequence[str | Path] | None = None,
    output_dir: str | Path | None = None,
    progress: Callable[[str], None] = print,
    *,
    on_progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume: bool = False,
    device: str | None = None,
) -> dict[str, Any]:
    """Train an interactive model; keep the weights with the best held-out Dice after box + clicks.

    ``device`` (auto, cpu or cuda) replaces the train config's ``device``; with ``workers`` the
    interactions are simulated in that many processes beside the gradient steps.

    ``datalists`` (interactive datalists) replace the train config's ``datasets``. Writes
    ``<output_dir>/<basename of model_path>`` (best weights), and every ``checkpoint_minutes``
    ``metrics.json``, ``model_last.pt`` (the last weights, saved as the best are) and
    ``checkpoint_last.pt`` (``resume`` continues from it, schedule and all). Stops after
    ``max_minutes`` of training (this run) or ``max_steps`` in total.
    """
    config_path = Path(config_path)
    config = load_model_config(config_path)
    if config.network is None or config.roi is None or config.model_path is None:
        raise ConfigError(f"{config_path}: interactive training needs 'network', 'roi' and 'model_path'")
    if Path(config.model_path).name in (LAST_CHECKPOINT, LAST_WEIGHTS):
        raise ConfigError(f"{config_path}: model_path may not be named {Path(config.model_path).name} "
                          "(the run's own file)")
    cfg = load_interactive_train_config(train_config_path)
    base = Path(train_config_path).parent
    try:
        lists, weights = training_datalists(cfg, base, datalists)
    except ConfigError as exc:
        raise ConfigError(f"{train_config_path}: {exc}") from None
    weights_path = (config_path.parent / config.model_path).resolve()
    out_dir = Path(output_dir) if output_dir else weights_path.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_out, last_out = out_dir / weights_path.name, out_dir / LAST_CHECKPOINT
    if resume and not last_out.is_file():
        raise ConfigError(f"cannot resume: no {LAST_CHECKPOINT} in {out_dir}")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed + (int(time.time()) if resume else 0))
    roi = tuple(config.roi)
    settings = interactive_settings(config)

    if cfg.sources_pack:
        sources = load_sources_pack(base / cfg.sources_pack, [dl.dataset for dl in lists])
        progress(f"{len(sources)} volumes from the sources pack {base / cfg.sources_pack}")
    else:
        sources = load_sources(lists, cfg.min_object_voxels, cfg.max_cases_per_dataset, progress)
    if not sources:
        raise ConfigError("no training volume has a structure to train on")
    def make_sampler(generator: np.random.Generator) -> Sampler:
        return Sampler(sources, weights, generator, cfg.component_probability, cfg.min_object_voxels,
                       cfg.thick_slice_probability)

    sampler = make_sampler(rng)
    val_objects = [o for dl in lists for o in held_out_objects(dl, cfg.val_objects_per_dataset, cfg.min_object_voxels)]
    progress(f"{len(sources)} training volumes, {len(val_objects)} validation objects; datasets "
             + ", ".join(f"{d} ({sum(len(v) for v in sampler._index[d].values())} objects, p={p:.2f})"
                         for d, p in zip(sampler.datasets, sampler.p)))

    network = build_network(config.network)
    if cfg.init_weights and not resume:
        network.load_state_dict(load_state_dict(base / cfg.init_weights))
        progress(f"initialised from {base / cfg.init_weights}")
    metrics: dict[str, Any] = {"model_config": str(config_path), "train_config": cfg.model_dump(),
                               "datasets": {d: round(float(p), 3) for d, p in zip(sampler.datasets, sampler.p)},
                               "train_volumes": len(sources), "validation_objects": len(val_objects),
                               "history": [], "best": None, "steps": 0, "train_minutes": 0.0, "samples": 0}
    best = -1.0
    state = None
    if resume:
        state = torch.load(last_out, map_location="cpu", weights_only=False)
        network.load_state_dict(state["network"])
        metrics, best = state["metrics"], state["best"]
        metrics["train_config"] = cfg.model_dump()
        progress(f"resumed from {last_out} at step {metrics['steps']} ({metrics['train_minutes']:.1f} min trained)")

    def pair_maker(generator: np.random.Generator) -> Callable[[Callable], tuple[np.ndarray, np.ndarray]]:
        """A maker of augmented training pairs with its own sampler, for one process's random stream."""
        local = make_sampler(generator)
        # Made only when on, so that runs without it keep their random streams.
        appearance = AppearanceAugmentation(cfg.appearance_probability, generator) if cfg.appearance_probability else None

        def make(net: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
            source, _, truth = local.sample()
            x, y, _ = make_example(net, source, truth, generator, roi, settings, cfg.first_prompts, cfg.max_rounds)
            return _augment(x, y, generator, appearance)

        return make

    # Workers are forked before this process touches CUDA (a forked CUDA context is unusable).
    workers = SimulationWorkers(cfg.workers, pair_maker, lambda: build_network(config.network), network, out_dir,
                                device=device or cfg.device, seed=int(rng.integers(2**31)),
                                autocast=cfg.autocast) if cfg.workers else None
    try:
        return _train_loop(cfg, network, workers, pair_maker(rng), metrics, best, state, val_objects, roi, settings,
                           config.tta_flips, device or cfg.device, weights_out, last_out, out_dir, progress, on_progress,
                           should_stop)
    finally:
        if workers is not None:
            workers.close()


def _train_loop(cfg: InteractiveTrainConfig, network: torch.nn.Module, workers: SimulationWorkers | None,
                make_pair: Callable[[Callable], tuple[np.ndarray, np.ndarray]], metrics: dict[str, Any], best: float,
                state: dict | None, val_objects: Sequence[ObjectSpec], roi: tuple[int, ...], settings: dict[str, Any],
                tta_flips: list[list[int]], device_name: str, weights_out: Path, last_out: Path, out_dir: Path,
                progress: Callable[[str], None], on_progress: Callable[[dict], None] | None, should_stop: Callable[[], bool] | None) -> dict[str, Any]:
    device = select_device(device_name)
    network.to(device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])  # after the move: its moments follow the parameters' device
    loss_fn = DiceCELoss(sigmoid=True)
    metrics["hardware"] = describe_device(device) + (f", {cfg.workers} simulation workers" if workers else "")
    progress(f"training on {metrics['hardware']}")

    def save_last() -> None:
        torch.save({"network": saved_state_dict(network.state_dict(), half=False), "optimizer": optimizer.state_dict(), "metrics": metrics, "best": best},
                   last_out)
        torch.save(saved_state_dict(network.state_dict(), cfg.save_half), out_dir / LAST_WEIGHTS)
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")

    # Simulated rounds run the plain network (one pass each); held-out validation runs it as it is served.
    run = network_callable(network, device, cfg.autocast)
    served = network_callable(flip_averaged(network, tta_flips), device)
    val_cache: dict[str, tuple] = {}
    session_start = time.time()
    minutes_before = metrics["train_minutes"]
    last_checkpoint = last_sync = time.time()
    losses: list[float] = []
    while True:
        elapsed = (time.time() - session_start) / 60
        metrics["train_minutes"] = minutes_before + elapsed
        stop = should_stop is not None and should_stop()
        out_of_budget = (cfg.max_minutes is not None and elapsed >= cfg.max_minutes) or \
            (cfg.max_steps is not None and metrics["steps"] >= cfg.max_steps)
        if stop or out_of_budget or time.time() - last_checkpoint >= cfg.checkpoint_minutes * 60:
            network.eval()
            entry = {"step": metrics["steps"], "minutes": round(metrics["train_minutes"], 2),
                     "loss": round(float(np.mean(losses)), 4) if losses else None,
                     "lr": optimizer.param_groups[0]["lr"]}
            if val_objects:
                entry.update(validate(served, val_objects, roi, settings, cfg.val_clicks, val_cache))
            score = entry.get("mean_final", -entry["loss"] if entry["loss"] is not None else -1e9)
            if score > best:
                best = score
                torch.save(saved_state_dict(network.state_dict(), cfg.save_half), weights_out)
                metrics["best"] = entry
            metrics["history"].append(entry)
            losses = []
            save_last()
            progress(json.dumps(entry))
            if on_progress is not None:
                on_progress(entry)
            last_checkpoint = time.time()
            if stop:
                raise TrainingStopped(f"interactive training stopped on request; resume continues from {last_out}")
            if out_of_budget:
                break
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, metrics["train_minutes"], metrics["steps"])
        if workers is not None:
            x, y = workers.batch(cfg.batch_size)
        else:
            network.eval()
            pairs = [make_pair(run) for _ in range(cfg.batch_size)]
            x, y = np.stack([p[0] for p in pairs]), np.stack([p[1][None] for p in pairs])
        losses.append(gradient_step(network, optimizer, loss_fn, torch.from_numpy(x).to(device),
                                    torch.from_numpy(y).to(device), cfg.autocast))
        metrics["steps"] += 1
        metrics["samples"] += cfg.batch_size
        if workers is not None and time.time() - last_sync >= cfg.weights_sync_seconds:
            workers.publish(network)
            last_sync = time.time()
        if metrics["steps"] % 20 == 0:
            progress(f"step {metrics['steps']} loss {np.mean(losses[-20:]):.4f} "
                     f"({metrics['train_minutes']:.1f} min, lr {optimizer.param_groups[0]['lr']:.2e})")
    return metrics
