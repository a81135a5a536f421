"""Segmentation quality: MONAI's Dice, 95 % Hausdorff and average surface distance, and reports.

Distances are in millimetres (the voxel spacing of the label). A region is a set of
label values scored as one binary mask (one value per label by default; BraTS
regions such as WT = {1, 2, 3} are unions). Empty masks are scored, not crashed on:

- truth and prediction both empty: nothing to score, every metric NaN (``n_both_empty``);
- exactly one of them empty: Dice 0, distances infinite (``n_empty_truth`` / ``n_empty_prediction``).

Summaries average Dice over the scored cases and distances over the finite ones.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance

from engines.data.io import read_volume
from engines.errors import InvalidInputError
from engines.tasks.base import Engine

__all__ = [
    "CaseScore",
    "binary_dice",
    "dice_summary",
    "dice_per_label",
    "evaluate_masks",
    "evaluate_model",
    "parse_regions",
    "score_case",
    "score_cases",
    "surface_scores",
    "summarise",
    "write_report",
]

Regions = Mapping[str, Sequence[int]]


def dice_per_label(prediction: np.ndarray, truth: np.ndarray, n_labels: int) -> list[float]:
    """Dice of labels 1..n_labels between two label maps of the same shape.

    The one convention of this module (see its docstring): a label absent from both maps is not
    scored (NaN); absent from one of them scores 0. Means over cases skip the NaNs.
    """
    pred = np.asarray(prediction, dtype=np.int64)
    true = np.asarray(truth, dtype=np.int64)
    return [binary_dice(pred == k, true == k) for k in range(1, n_labels + 1)]


def binary_dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two binary masks with the module's empty-mask convention (NaN when both are empty)."""
    pred, true = np.asarray(prediction, dtype=bool), np.asarray(truth, dtype=bool)
    if not pred.any() and not true.any():
        return math.nan
    if not (pred.any() and true.any()):
        return 0.0
    return float(compute_dice(torch.as_tensor(pred)[None, None].float(), torch.as_tensor(true)[None, None].float(),
                              include_background=True).item())


def score_cases(engine: Engine, cases: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Dice per label of each case (``image``/``label`` paths) through the real engine, on full volumes.

    An annotation engine gets the exact extreme points of all labelled voxels (one object), as a
    user's six clicks; a segmentation engine runs on the image alone.
    """
    from engines.evaluation.batch import run_case

    scores = []
    for case in cases:
        _, truth, result = run_case(engine, case)
        if engine.type == "annotation":
            truth = (truth > 0).astype(np.uint8)
        scores.append({"image": case["image"], "dice": dice_per_label(result.mask, truth, len(engine.labels))})
    return scores


def dice_summary(scores: list[dict[str, Any]], labels: list[str]) -> dict[str, Any]:
    """Mean Dice per label and overall over scored cases (a report's summary)."""
    if not scores:
        return {"cases": 0, "mean_dice": None, "dice_per_label": {}}
    with warnings.catch_warnings():  # a label empty in every case has no mean (None)
        warnings.simplefilter("ignore", RuntimeWarning)
        per_label = np.nanmean(np.asarray([s["dice"] for s in scores], dtype=float), axis=0)
        overall = np.nanmean(per_label) if not np.all(np.isnan(per_label)) else math.nan
    value = lambda v: None if math.isnan(v) else round(float(v), 4)  # noqa: E731
    return {"cases": len(scores), "mean_dice": value(overall),
            "dice_per_label": {label: value(v) for label, v in zip(labels, per_label)}}


@dataclass(frozen=True)
class CaseScore:
    """The scores of one region in one case (distances in mm)."""

    case: str
    label: str
    dice: float
    hd95: float
    asd: float


def surface_scores(prediction: np.ndarray, truth: np.ndarray,
                   spacing: Sequence[float]) -> tuple[float, float, float]:
    """(Dice, 95 % Hausdorff distance, symmetric average surface distance) of two binary masks.

    Distances are in the units of ``spacing``; see the module docstring for empty masks.
    """
    pred = np.asarray(prediction, dtype=bool)
    true = np.asarray(truth, dtype=bool)
    if pred.shape != true.shape:
        raise InvalidInputError(f"prediction size {list(pred.shape)} differs from the label's {list(true.shape)}")
    has_pred, has_true = bool(pred.any()), bool(true.any())
    dice = binary_dice(pred, true)
    if not has_pred and not has_true:
        return math.nan, math.nan, math.nan
    if not (has_pred and has_true):
        return dice, math.inf, math.inf
    y_pred = torch.as_tensor(pred)[None, None].float()
    y = torch.as_tensor(true)[None, None].float()
    spacing = [float(s) for s in spacing]
    with warnings.catch_warnings():  # MONAI warns about the empty cases excluded above
        warnings.simplefilter("ignore")
        hd95 = compute_hausdorff_distance(y_pred, y, include_background=True, percentile=95, spacing=spacing)
        asd = compute_average_surface_distance(y_pred, y, include_background=True, symmetric=True, spacing=spacing)
    return dice, float(hd95.item()), float(asd.item())


def parse_regions(texts: Sequence[str]) -> dict[str, list[int]]:
    """``["WT=1,2,3", "TC=2,3"]`` as ``{"WT": [1, 2, 3], "TC": [2, 3]}``.

    Raises:
        InvalidInputError: a text that is not ``NAME=v1,v2,...`` with integer values.
    """
    regions: dict[str, list[int]] = {}
    for text in texts:
        name, sep, values = text.partition("=")
        try:
            parsed = [int(v) for v in values.split(",")]
        except ValueError:
            parsed = []
        if not sep or not name.strip() or not parsed:
            raise InvalidInputError(f"region {text!r} must be NAME=v1,v2,... (label values), e.g. WT=1,2,3")
        regions[name.strip()] = parsed
    return regions


def score_case(case: str, prediction: np.ndarray, truth: np.ndarray, spacing: Sequence[float],
               regions: Regions) -> list[CaseScore]:
    """One :class:`CaseScore` per region: the region's values in each label map as one mask."""
    pred = np.rint(np.asarray(prediction)).astype(np.int64)
    true = np.rint(np.asarray(truth)).astype(np.int64)
    rows = []
    for label, values in regions.items():
        dice, hd95, asd = surface_scores(np.isin(pred, values), np.isin(true, values), spacing)
        rows.append(CaseScore(case, label, dice, hd95, asd))
    return rows


def summarise(rows: Sequence[CaseScore]) -> dict[str, dict[str, Any]]:
    """Per label: mean Dice, its standard deviation, mean finite HD95 and ASD, and the case counts."""
    summary: dict[str, dict[str, Any]] = {}
    for label in dict.fromkeys(r.label for r in rows):
        mine = [r for r in rows if r.label == label]
        dice = np.asarray([r.dice for r in mine if not math.isnan(r.dice)])
        hd95 = np.asarray([r.hd95 for r in mine if math.isfinite(r.hd95)])
        asd = np.asarray([r.asd for r in mine if math.isfinite(r.asd)])
        summary[label] = {
            "dice": _number(dice.mean()) if dice.size else None,
            "dice_std": _number(dice.std()) if dice.size else None,
            "hd95": _number(hd95.mean()) if hd95.size else None,
            "asd": _number(asd.mean()) if asd.size else None,
            "n": int(dice.size),
            "n_both_empty": sum(math.isnan(r.dice) for r in mine),
            "n_infinite_distance": sum(math.isinf(r.hd95) for r in mine),
        }
    return summary


def _number(value: float) -> float:
    return round(float(value), 4)


def _text_summary(summary: Mapping[str, Mapping[str, Any]], source: str) -> str:
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    lines = [f"Evaluation of {source}", "",
             f"{'label':<24}{'n':>5}{'dice':>9}{'std':>9}{'hd95 mm':>10}{'asd mm':>9}  empty/inf"]
    for label, s in summary.items():
        lines.append(f"{label:<24}{s['n']:>5}{fmt(s['dice']):>9}{fmt(s['dice_std']):>9}{fmt(s['hd95']):>10}"
                     f"{fmt(s['asd']):>9}  {s['n_both_empty']}/{s['n_infinite_distance']}")
    lines += ["", "n: cases scored; empty: truth and prediction both empty (not scored); "
              "inf: one of them empty (Dice 0, distance infinite, left out of the distance means)"]
    return "\n".join(lines) + "\n"


def _boxplot(rows: Sequence[CaseScore], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = list(dict.fromkeys(r.label for r in rows))
    data = [[r.dice for r in rows if r.label == label and not math.isnan(r.dice)] for label in labels]
    figure = Figure(figsize=(max(3.0, 1.2 * len(labels) + 1.5), 3.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.boxplot([d or [math.nan] for d in data], showmeans=True)
    axes.set_xticks(range(1, len(labels) + 1), labels)
    axes.set_ylim(0, 1.02)
    axes.set_ylabel("Dice")
    axes.set_title("Dice per label")
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)


def write_report(rows: Sequence[CaseScore], output: str | Path, source: str = "") -> dict[str, dict[str, Any]]:
    """Write ``raw.csv``, ``summary.json``, ``summary.txt`` and ``dice_boxplot.png`` to ``output``.

    Returns:
        The summary (as in ``summary.json``).
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    with open(output / "raw.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["case", "label", "dice", "hd95", "asd"])
        for r in rows:  # NaN and inf written explicitly ("nan", "inf")
            writer.writerow([r.case, r.label, *(_cell(v) for v in (r.dice, r.hd95, r.asd))])
    summary = summarise(rows)
    (output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (output / "summary.txt").write_text(_text_summary(summary, source or str(output)), encoding="utf-8")
    _boxplot(rows, output / "dice_boxplot.png")
    return summary


def _cell(value: float) -> str:
    return "nan" if math.isnan(value) else "inf" if math.isinf(value) else f"{value:.6g}"


def evaluate_masks(prediction_dir: str | Path, label_dir: str | Path, output: str | Path,
                   regions: Regions | None = None, progress: Any = None) -> dict[str, dict[str, Any]]:
    """Score every prediction file against the label file of the same name; write the report.

    Files match by name without the image suffix (``a.nii`` matches ``a.nii.gz``). Labels
    without a prediction are left out; a prediction without a label is an error. Without
    ``regions`` every non-zero value found in a label or prediction is a region.

    Raises:
        InvalidInputError: no predictions, unmatched predictions, or different grids.
    """
    from engines.data.io import same_grid
    from engines.evaluation.batch import IMAGE_SUFFIXES, strip_suffix

    def listing(folder: Path) -> dict[str, Path]:
        if not folder.is_dir():
            raise InvalidInputError(f"{folder} is not a folder")
        return {strip_suffix(p.name): p for p in sorted(folder.iterdir())
                if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES)}

    predictions, labels = listing(Path(prediction_dir)), listing(Path(label_dir))
    if not predictions:
        raise InvalidInputError(f"{prediction_dir} holds no prediction ({', '.join(IMAGE_SUFFIXES)})")
    unmatched = sorted(set(predictions) - set(labels))
    if unmatched:
        raise InvalidInputError(f"{len(unmatched)} prediction(s) have no label of the same name in {label_dir}: "
                                f"{', '.join(unmatched[:5])}{', ...' if len(unmatched) > 5 else ''}")
    pairs: list[tuple[str, np.ndarray, np.ndarray, Sequence[float]]] = []
    found: set[int] = set()
    rows: list[CaseScore] = []
    for n, (case, pred_path) in enumerate(predictions.items(), 1):
        pred, truth = read_volume(pred_path), read_volume(labels[case])
        if pred.shape != truth.shape or not same_grid(pred.geometry, truth.geometry):
            raise InvalidInputError(f"{pred_path.name}: size {list(pred.shape)} / spacing {list(pred.geometry.spacing)} "
                                    f"is not the grid of its label ({list(truth.shape)} / {list(truth.geometry.spacing)})")
        if regions is not None:
            rows += score_case(case, pred.array, truth.array, truth.geometry.spacing, regions)
        else:  # the regions are known only once every case was read
            pairs.append((case, pred.array, truth.array, truth.geometry.spacing))
            found |= {int(v) for v in np.unique(np.rint(pred.array))} | {int(v) for v in np.unique(np.rint(truth.array))}
        if progress:
            progress(n, len(predictions), case)
    if regions is None:
        values = sorted(found - {0})
        all_regions = {str(v): [v] for v in values}
        for case, pred_array, truth_array, spacing in pairs:
            rows += score_case(case, pred_array, truth_array, spacing, all_regions)
    return write_report(rows, output, f"{prediction_dir} against {label_dir}")


def evaluate_model(config: str | Path, datalist: str | Path, output: str | Path, *,
                   regions: Regions | None = None, split: str = "validation", perturbation: float = 0.0,
                   seed: int = 0, progress: Any = None, device: str | None = None) -> dict[str, dict[str, Any]]:
    """Run a model config over a datalist's ``split`` and score it against the labels; write the report.

    Regions default to the model's labels (value n for label n; an extreme-point model scores
    its one object against every labelled voxel). Extreme points come from each label.
    """
    from engines.data.datalist import load_datalist
    from engines.evaluation.batch import case_name, load_engine, run_case

    cases = load_datalist(datalist).get(split) or []
    if not cases:
        raise InvalidInputError(f"{datalist} has no '{split}' cases")
    engine = load_engine(config, device=device)
    binary = engine.type == "annotation"
    regions = regions or {name: [n] for n, name in enumerate(engine.labels, 1)}
    rng = np.random.RandomState(seed) if perturbation > 0 else None
    rows: list[CaseScore] = []
    try:
        for n, case in enumerate(cases, 1):
            name = case_name(case["image"])
            volume, truth, result = run_case(engine, case, rng, perturbation)
            if binary:
                truth = truth > 0
            rows += score_case(name, result.mask, truth, volume.geometry.spacing, regions)
            if progress:
                progress(n, len(cases), name)
    finally:
        engine.close()
    return write_report(rows, output, f"{config} on the {split} split of {datalist}")
