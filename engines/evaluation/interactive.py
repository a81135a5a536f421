"""The CVPR 2025 interactive-segmentation protocol, run in-process on a PyTorch network.

Per object: a first prompt, then :data:`N_CLICKS` corrective clicks, each at the centre (largest
distance-transform value) of the largest 26-connected error component, positive where the object
is missed, negative where the mask overflows; every step goes through the shared
:func:`engines.tasks.interaction.predict_step` with the previous mask as input. Variants of the
first prompt (:data:`VARIANTS`):

- ``box``: a 2D box on the object's largest axial slice (what viewers draw and nnInteractive takes);
- ``challenge_box``: the challenge's own box, the middle slice's box stretched over the object's z-range;
- ``clicks``: no box, the first click at the object's centre;
- ``extreme_points``: the six extreme points of the object.

Per step: Dice, normalised surface Dice at :data:`NSD_TOLERANCE_MM` (MONAI's ``compute_surface_dice``)
and the time; per object: the areas under Dice and NSD over the steps (trapezoids with one unit per
interaction, as the challenge's ``auc(range(n), scores)``: the maximum is the number of clicks) and
the final values. Axial means the last array axis (``k``).
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_dice, compute_surface_dice
from scipy import ndimage

from engines.config.model import InteractiveSpec, load_json
from engines.data.datalist import load_datalist
from engines.data.io import read_volume
from engines.errors import ConfigError, InvalidInputError
from engines.evaluation.batch import strip_suffix
from engines.inferers import flip_averaged
from engines.tasks.interaction import logit_threshold, predict_step
from engines.transforms.prompts import Prompt, mask_extent, normalise_volume

__all__ = [
    "NSD_TOLERANCE_MM",
    "N_CLICKS",
    "VARIANTS",
    "InteractiveDatalist",
    "ObjectSpec",
    "StepScore",
    "auc",
    "backend_network",
    "case_name",
    "centre_voxel",
    "challenge_box",
    "dice_nsd",
    "error_click",
    "evaluate_interactive",
    "extreme_points",
    "first_prompt",
    "largest_error",
    "largest_slice_box",
    "load_interactive_datalist",
    "load_network",
    "mean_per_step",
    "model_network",
    "object_volumes",
    "protocol_masks",
    "read_case",
    "run_protocol",
    "structures_of",
    "summarise",
    "validation_objects",
    "write_outputs",
]

N_CLICKS = 5
NSD_TOLERANCE_MM = 2.0
VARIANTS = ("box", "challenge_box", "clicks", "extreme_points")
_CONNECTIVITY_26 = np.ones((3, 3, 3), bool)


def centre_voxel(region: np.ndarray, spacing: Sequence[float] | None = None) -> np.ndarray:
    """The voxel of ``region`` farthest from its boundary (largest Euclidean distance transform).

    Ties go to the first voxel in C order, so the answer is deterministic. Only the region's
    bounding box (padded by one voxel, so the volume's faces count as boundary) is transformed.
    """
    if not region.any():
        raise InvalidInputError("an empty region has no centre")
    lo, hi = mask_extent(region)
    sub = np.pad(region[tuple(slice(a, b) for a, b in zip(lo, hi))], 1)
    dist = ndimage.distance_transform_edt(sub, sampling=spacing)
    return np.array(np.unravel_index(int(np.argmax(dist)), dist.shape)) - 1 + lo


def largest_error(prediction: np.ndarray | None, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(component, lo)``: the largest 26-connected component of the errors, inside a window at ``lo``.

    Only the bounding box of the prediction and the truth is searched; None when there is no error.
    """
    truth = truth.astype(bool, copy=False)
    pred = np.zeros(truth.shape, bool) if prediction is None else prediction.astype(bool, copy=False)
    union = truth | pred
    if not union.any():
        return None
    lo, hi = mask_extent(union)
    window = tuple(slice(a, b) for a, b in zip(lo, hi))
    error = truth[window] ^ pred[window]
    if not error.any():
        return None
    labels, count = ndimage.label(error, structure=_CONNECTIVITY_26)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0
    return labels == int(np.argmax(sizes)), lo


def error_click(prediction: np.ndarray | None, truth: np.ndarray,
                spacing: Sequence[float] | None = None) -> Prompt | None:
    """The protocol's corrective click: the centre of the largest 26-connected error component.

    Positive where the object is missed, negative where the mask overflows; None when there is no error.
    """
    found = largest_error(prediction, truth)
    if found is None:
        return None
    component, lo = found
    voxel = centre_voxel(component, spacing) + lo
    return Prompt("point", positive=bool(truth[tuple(voxel)]), voxels=voxel[None].astype(np.int32))


def largest_slice_box(truth: np.ndarray) -> Prompt:
    """A 2D box around the object on its largest axial slice (the last axis)."""
    areas = truth.reshape(-1, truth.shape[2]).sum(0)
    k = int(np.argmax(areas))
    lo, hi = mask_extent(truth[:, :, k])
    return Prompt("box", box=((int(lo[0]), int(lo[1]), k), (int(hi[0]), int(hi[1]), k + 1)))


def challenge_box(truth: np.ndarray) -> Prompt:
    """The challenge's box: the middle slice's 2D box stretched over the object's axial range."""
    lo, hi = mask_extent(truth)
    k = (int(lo[2]) + int(hi[2]) - 1) // 2
    plane = truth[:, :, k]
    if not plane.any():  # a hollow middle (two parts): fall back to the object's full extent
        plane_lo, plane_hi = lo[:2], hi[:2]
    else:
        plane_lo, plane_hi = mask_extent(plane)
    return Prompt("box", box=((int(plane_lo[0]), int(plane_lo[1]), int(lo[2])),
                              (int(plane_hi[0]), int(plane_hi[1]), int(hi[2]))))


def extreme_points(truth: np.ndarray) -> np.ndarray:
    """The six extreme points ``(6, 3)``: per axis, the middle voxel of the object's lowest and highest face."""
    nz = np.argwhere(truth)
    points = []
    for axis in range(3):
        for value in (nz[:, axis].min(), nz[:, axis].max()):
            face = nz[nz[:, axis] == value]
            points.append(face[np.argsort(np.linalg.norm(face - face.mean(0), axis=1), kind="stable")[0]])
    return np.asarray(points, np.int32)


def first_prompt(variant: str, truth: np.ndarray, spacing: Sequence[float] | None = None) -> Prompt:
    """The first prompt of a protocol variant (see :data:`VARIANTS`)."""
    if variant == "box":
        return largest_slice_box(truth)
    if variant == "challenge_box":
        return challenge_box(truth)
    if variant == "clicks":
        return Prompt("point", voxels=centre_voxel(truth, spacing)[None].astype(np.int32))
    if variant == "extreme_points":
        return Prompt("extreme_points", voxels=extreme_points(truth))
    raise InvalidInputError(f"unknown protocol variant '{variant}': choose one of {', '.join(VARIANTS)}")


def dice_nsd(prediction: np.ndarray, truth: np.ndarray, spacing: Sequence[float],
             tolerance_mm: float = NSD_TOLERANCE_MM) -> tuple[float, float]:
    """Dice and normalised surface Dice (tolerance in mm) of two binary masks; 1.0 each when both are empty."""
    pred, true = prediction.astype(bool), truth.astype(bool)
    if not pred.any() and not true.any():
        return 1.0, 1.0
    if not pred.any() or not true.any():
        return 0.0, 0.0
    lo, hi = mask_extent(pred | true)
    lo, hi = np.maximum(lo - 2, 0), np.minimum(hi + 2, true.shape)
    window = tuple(slice(a, b) for a, b in zip(lo, hi))
    as_tensor = lambda m: torch.as_tensor(np.stack([~m[window], m[window]]))[None].float()
    y_pred, y = as_tensor(pred), as_tensor(true)
    dice = float(compute_dice(y_pred[:, 1:], y[:, 1:], include_background=True).item())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nsd = compute_surface_dice(y_pred, y, class_thresholds=[float(tolerance_mm)], include_background=False,
                                   spacing=[float(s) for s in spacing])
    return dice, float(nsd.item())


def auc(scores: Sequence[float]) -> float:
    """Area under the scores over interactions 0..n-1 (trapezoids, one unit apart), as the challenge computes."""
    values = np.asarray(scores, np.float64)
    if len(values) < 2:
        return float(values.sum()) if len(values) else math.nan
    return float(((values[1:] + values[:-1]) / 2).sum())


@dataclass(frozen=True)
class ObjectSpec:
    """One object to segment: a case, the label values that make it, and where it comes from."""

    dataset: str
    structure: str
    case: str
    image: str
    label: str
    values: tuple[int, ...]


@dataclass(frozen=True)
class StepScore:
    """One step of the protocol on one object (a row of ``interactive.csv``)."""

    dataset: str
    structure: str
    case: str
    variant: str
    step: int
    prompt: str
    dice: float
    nsd: float
    ms: float


Network = Callable[[np.ndarray], np.ndarray]


@dataclass
class InteractiveDatalist:
    """An interactive datalist: cases with absolute paths, and the structures to segment in them."""

    dataset: str
    structures: dict[str, tuple[int, ...]] | None
    training: list[dict[str, Any]]
    validation: list[dict[str, Any]]


def load_interactive_datalist(path: str | Path) -> InteractiveDatalist:
    """A Clara datalist with ``dataset`` (default: the file's stem) and optional ``structures`` {name: [values]}.

    Without ``structures`` each label value present is a structure (``label_<v>``), and with
    two to four values present their union (``foreground``) is one too.
    """
    data = load_json(path)
    lists = load_datalist(path)
    structures = data.get("structures")
    if structures is not None:
        if not isinstance(structures, dict) or not all(
                isinstance(v, list) and v and all(isinstance(x, int) and x > 0 for x in v) for v in structures.values()):
            raise ConfigError(f"{path}: 'structures' must map names to non-empty lists of positive label values")
        structures = {str(k): tuple(v) for k, v in structures.items()}
    return InteractiveDatalist(str(data.get("dataset") or Path(path).stem), structures,
                               lists["training"], lists.get("validation", []))


def structures_of(label: np.ndarray, declared: dict[str, tuple[int, ...]] | None,
                  min_voxels: int) -> dict[str, tuple[int, ...]]:
    """The structures (name -> label values) with at least ``min_voxels`` voxels in ``label``."""
    present = {int(v): int(n) for v, n in zip(*np.unique(label, return_counts=True)) if v > 0}
    if declared is None:
        declared = {f"label_{v}": (v,) for v in present}
        if 1 < len(present) <= 4:  # a few labels: their union is an object too (not of many organs)
            declared["foreground"] = tuple(sorted(present))
    return {name: values for name, values in declared.items()
            if sum(present.get(v, 0) for v in values) >= min_voxels}


def case_images(case: dict[str, Any]) -> list[str]:
    """A datalist case's image files: its ``image``, or each of them when it lists several (modalities)."""
    return case["image"] if isinstance(case["image"], list) else [case["image"]]


def case_name(case: dict[str, Any]) -> str:
    """A short case name: the image's file name without suffix (and its folder unless that is ``images``)."""
    image = case["image"][0] if isinstance(case["image"], list) else case["image"]
    name = strip_suffix(Path(image).name)
    parent = Path(image).parent.name
    return f"{parent}/{name}" if parent not in ("images", "imagesTr", "imagesTs") else name


def validation_objects(datalist: InteractiveDatalist, min_voxels: int = 20) -> list[ObjectSpec]:
    """Every (validation case, structure) object of an interactive datalist, image by image.

    A case whose ``image`` lists several files (modalities) gives one object per file and structure.
    """
    objects = []
    for case in datalist.validation:
        label = np.asarray(read_volume(case["label"]).array)
        for image in case_images(case):
            for name, values in structures_of(np.rint(label).astype(np.int32), datalist.structures,
                                              min_voxels).items():
                objects.append(ObjectSpec(datalist.dataset, name, case_name({"image": image}), image, case["label"],
                                          values))
    return objects


def read_case(image_path: str, label_path: str) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Normalised image, integer labels and spacing of one case."""
    image = read_volume(image_path)
    label = np.rint(np.asarray(read_volume(label_path).array)).astype(np.int16)
    array = np.asarray(image.array)
    if array.ndim == 4:  # several components: the first
        array = array[..., 0]
    if array.shape != label.shape:
        raise ConfigError(f"{image_path}: image {list(array.shape)} and label {list(label.shape)} differ")
    return normalise_volume(array), label, tuple(float(s) for s in image.geometry.spacing[:3])




def object_volumes(objects: Sequence[ObjectSpec]) -> Iterator[tuple[ObjectSpec, np.ndarray, np.ndarray,
                                                                     tuple[float, float, float]]]:
    """``(spec, normalised image, object mask, spacing)`` per object, reading each case once (objects of a case
    are listed together, so only one volume is held at a time)."""
    loaded: dict[tuple[str, str], tuple] = {}
    for spec in objects:
        key = (spec.image, spec.label)
        if key not in loaded:
            loaded = {key: read_case(*key)}
        image, label, spacing = loaded[key]
        yield spec, image, np.isin(label, spec.values), spacing


def protocol_masks(network: Network, image: np.ndarray, spacing: Sequence[float], truth: np.ndarray,
                   roi: Sequence[int], *, variant: str = "box", n_clicks: int = N_CLICKS,
                   interactive: Mapping[str, Any] | None = None,
                   clock: Callable[[], float] = time.perf_counter) -> Iterator[tuple[str, np.ndarray, float]]:
    """Each protocol step's ``(prompt, mask, ms)``: the first prompt, then ``n_clicks`` error clicks.

    ``image`` is the normalised volume, ``truth`` the object's mask; ``interactive`` holds
    ``predict_step``'s crop settings (margin, min_size_mm, max_zooms). Once the mask is perfect the
    remaining steps repeat it as ``"none"`` (no click, no time).
    """
    truth = truth.astype(bool, copy=False)
    if not truth.any():
        raise InvalidInputError("the object is empty")
    settings = dict(interactive or {})
    prompts = [first_prompt(variant, truth, spacing)]
    mask: np.ndarray | None = None
    for step in range(n_clicks + 1):
        if step:
            click = error_click(mask, truth, spacing)
            if click is None:  # perfect: the mask stays
                yield "none", mask, 0.0
                continue
            prompts.append(click)
        start = clock()
        mask = predict_step(network, image, spacing, prompts, mask, roi, **settings).mask
        ms = (clock() - start) * 1000.0
        name = prompts[-1].kind if not step else ("positive_click" if prompts[-1].positive else "negative_click")
        if variant == "box" and not step:
            name = "box2d"
        yield name, mask, ms


def run_protocol(network: Network, image: np.ndarray, spacing: Sequence[float], truth: np.ndarray, roi: Sequence[int],
                 *, variant: str = "box", n_clicks: int = N_CLICKS, interactive: Mapping[str, Any] | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> list[tuple[str, float, float, float]]:
    """Steps ``(prompt, dice, nsd, ms)`` of one object, scored from :func:`protocol_masks`."""
    truth = truth.astype(bool, copy=False)
    steps: list[tuple[str, float, float, float]] = []
    for name, mask, ms in protocol_masks(network, image, spacing, truth, roi, variant=variant, n_clicks=n_clicks,
                                         interactive=interactive, clock=clock):
        # a repeated mask keeps its scores (no need to score it again)
        steps.append((name, *(steps[-1][1:3] if name == "none" else dice_nsd(mask, truth, spacing)), ms))
    return steps


def mean_per_step(series: Sequence[Sequence[float]]) -> list[float]:
    """The mean over objects of a per-step figure (one list per object); an object that ended early keeps its
    last value."""
    n = max(len(values) for values in series)
    return [round(float(np.mean([values[min(i, len(values) - 1)] for values in series])), 4) for i in range(n)]


def summarise(rows: Sequence[StepScore]) -> dict[str, Any]:
    """``dice_final``, ``dice_auc``, ``nsd_final``, ``nsd_auc`` (and box-only Dice), overall, per dataset and per structure.

    Grouped per variant; every figure is the mean over objects. ``dice_per_step`` is the mean Dice after
    each step; ``clicks_lowering_dice`` the share of clicks after which an object's Dice fell.
    """
    objects: dict[tuple[str, str, str, str], list[StepScore]] = {}
    for row in rows:
        objects.setdefault((row.variant, row.dataset, row.structure, row.case), []).append(row)
    per_object = []
    for (variant, dataset, structure, _), steps in objects.items():
        steps = sorted(steps, key=lambda r: r.step)
        dice, nsd = [r.dice for r in steps], [r.nsd for r in steps]
        per_object.append({"variant": variant, "dataset": dataset, "structure": structure,
                           "dice_first": dice[0], "dice_final": dice[-1], "dice_auc": auc(dice),
                           "nsd_final": nsd[-1], "nsd_auc": auc(nsd),
                           "ms_per_step": float(np.mean([r.ms for r in steps if r.prompt != "none"])), "dice": dice})

    def mean(group: list[dict[str, Any]]) -> dict[str, Any]:
        keys = ("dice_first", "dice_final", "dice_auc", "nsd_final", "nsd_auc", "ms_per_step")
        out = {"objects": len(group), **{k: round(float(np.mean([o[k] for o in group])), 4) for k in keys}}
        out["dice_per_step"] = mean_per_step([o["dice"] for o in group])
        clicks = sum(len(o["dice"]) - 1 for o in group)
        worse = sum(b < a for o in group for a, b in itertools.pairwise(o["dice"]))
        out["clicks_lowering_dice"] = round(worse / clicks, 4) if clicks else 0.0
        return out

    summary: dict[str, Any] = {}
    for variant in sorted({o["variant"] for o in per_object}):
        of_variant = [o for o in per_object if o["variant"] == variant]
        datasets = sorted({o["dataset"] for o in of_variant})
        summary[variant] = {
            "overall": mean(of_variant),
            "datasets": {d: mean([o for o in of_variant if o["dataset"] == d]) for d in datasets},
            "structures": {f"{d}/{s}": mean([o for o in of_variant if (o["dataset"], o["structure"]) == (d, s)])
                           for d, s in sorted({(o["dataset"], o["structure"]) for o in of_variant})},
        }
    return summary


def _plot(rows: Sequence[StepScore], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups: dict[tuple[str, str], dict[int, list[float]]] = {}
    for row in rows:
        key = (row.variant, f"{row.dataset}/{row.structure}")
        groups.setdefault(key, {}).setdefault(row.step, []).append(row.dice)
    for (variant, name), by_step in sorted(groups.items()):
        steps = sorted(by_step)
        ax.plot(steps, [np.mean(by_step[s]) for s in steps], marker="o", label=f"{name} ({variant})")
    ax.set_xlabel("interaction (0 = first prompt, then corrective clicks)")
    ax.set_ylabel("mean Dice")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(rows: Sequence[StepScore], output: str | Path) -> dict[str, Any]:
    """Write ``interactive.csv``, ``summary.json`` and ``dice_per_interaction.png`` into ``output``; return the summary."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "interactive.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["case", "object", "step", "prompt", "dice", "nsd", "ms", "variant"])
        for r in rows:
            writer.writerow([r.case, f"{r.dataset}/{r.structure}", r.step, r.prompt, f"{r.dice:.4f}", f"{r.nsd:.4f}",
                             f"{r.ms:.1f}", r.variant])
    summary = summarise(rows)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    if rows:
        _plot(rows, out / "dice_per_interaction.png")
    return summary


def rows_for(spec: ObjectSpec, variant: str, steps: Sequence[tuple[str, float, float, float]]) -> list[StepScore]:
    """The CSV rows of one object's protocol steps."""
    return [StepScore(spec.dataset, spec.structure, spec.case, variant, n, prompt, dice, nsd, ms)
            for n, (prompt, dice, nsd, ms) in enumerate(steps)]


def as_dict(row: StepScore) -> dict[str, Any]:
    """A row as a plain dict (for JSON progress lines)."""
    return asdict(row)


def load_network(config_path: str | Path) -> tuple[Network, Any, Path]:
    """``(network, model config, backend)`` of an interactive model config, through the engine's backend loader.

    The network maps ``(C, *roi)`` to logits ``(*roi)``, as :func:`predict_step` wants.
    """
    from engines.backends import load_backend
    from engines.config.model import load_model_config

    config_path = Path(config_path)
    config = load_model_config(config_path)
    if config.type != "deepgrow" or config.roi is None:
        raise InvalidInputError(f"{config_path}: the interactive protocol runs 'deepgrow' models (with a 'roi'), "
                                f"not '{config.type}'")
    backend = load_backend(config, config_path.parent.resolve())
    return model_network(backend, config), config, backend


def model_network(backend: Callable[[torch.Tensor], Any], config: Any) -> Network:
    """A backend as the protocol's network for a model ``config``, as the served engine runs it: averaged over
    the config's ``tta_flips``, its logits less the model's ``thresh`` logit (so ``logits > 0`` is the mask)."""
    network = backend_network(flip_averaged(backend, config.tta_flips))
    shift = logit_threshold(config.thresh)
    return network if shift == 0.0 else (lambda x: network(x) - shift)


def interactive_settings(config: Any) -> dict[str, Any]:
    """A model config's ``interactive`` options as the keyword settings :func:`run_protocol` and the
    simulated training rounds take, every one present (:class:`InteractiveSpec`'s defaults where the
    config has none)."""
    settings = getattr(config, "interactive", None)
    if settings is None:
        return InteractiveSpec().model_dump()
    return settings.model_dump() if hasattr(settings, "model_dump") else InteractiveSpec(**settings).model_dump()


def backend_network(backend: Callable[[torch.Tensor], Any]) -> Network:
    """A backend (PyTorch or an export) as the network :func:`predict_step` wants: ``(C, *roi)`` to logits."""

    def network(x: np.ndarray) -> np.ndarray:
        out = backend(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None])
        return np.asarray(out.detach().cpu().numpy() if hasattr(out, "detach") else out)[0, 0]

    return network


def evaluate_interactive(config: str | Path, datalists: Sequence[str | Path], output: str | Path, *,
                         variants: Sequence[str] = ("box",), n_clicks: int = N_CLICKS,
                         max_objects: int | None = None, structures: Sequence[str] | None = None,
                         progress: Callable[[int, int, str], None] | None = None) -> dict[str, Any]:
    """Run the protocol on every validation object of interactive datalists; write the report into ``output``.

    Objects are (validation case, structure) pairs (see
    :func:`engines.training.interactive.load_interactive_datalist`); ``max_objects`` keeps the
    first N of each datalist (a subset, named in the summary); ``structures`` keeps only those names.
    """
    objects: list[ObjectSpec] = []
    for path in datalists:
        found = [o for o in validation_objects(load_interactive_datalist(path))
                 if not structures or o.structure in structures]
        if not found:
            raise InvalidInputError(f"{path} has no validation objects")
        objects += found[:max_objects]
    for variant in variants:
        if variant not in VARIANTS:
            raise InvalidInputError(f"unknown protocol variant '{variant}': choose among {', '.join(VARIANTS)}")
    network, model, backend = load_network(config)
    settings = interactive_settings(model)
    rows: list[StepScore] = []
    total = len(objects) * len(variants)
    try:
        for n, (spec, image, truth, spacing) in enumerate(object_volumes(objects)):
            for m, variant in enumerate(variants):
                steps = run_protocol(network, image, spacing, truth, model.roi, variant=variant, n_clicks=n_clicks,
                                     interactive=settings)
                rows += rows_for(spec, variant, steps)
                if progress:
                    progress(n * len(variants) + m + 1, total, f"{spec.case} {spec.dataset}/{spec.structure}")
    finally:
        close = getattr(backend, "close", None)
        if close:
            close()
    summary = write_outputs(rows, output)
    summary["protocol"] = {"config": str(config), "datalists": [str(p) for p in datalists], "n_clicks": n_clicks,
                           "nsd_tolerance_mm": NSD_TOLERANCE_MM, "objects": len(objects),
                           "max_objects_per_datalist": max_objects, "structures": list(structures or [])}
    (Path(output) / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
