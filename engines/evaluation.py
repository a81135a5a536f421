"""Segmentation quality metrics (MONAI's Dice on one-hot masks) and scoring an engine on cases."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.metrics import compute_dice

from engines.engine import Engine
from engines.io import read_volume
from engines.points import extreme_points

__all__ = ["dice_per_label", "score_cases", "summarize"]


def dice_per_label(prediction: np.ndarray, truth: np.ndarray, n_labels: int) -> list[float]:
    """Dice of labels 1..n_labels between two label maps of the same shape.

    A label absent from both maps scores 1.0 (nothing to find, nothing found).
    """
    pred = torch.as_tensor(np.asarray(prediction, dtype=np.int64))
    true = torch.as_tensor(np.asarray(truth, dtype=np.int64))
    one_hot = lambda t: torch.stack([t == k for k in range(n_labels + 1)])[None].float()  # noqa: E731
    dice = compute_dice(one_hot(pred), one_hot(true), include_background=False, ignore_empty=False)[0]
    return [float(v) for v in torch.nan_to_num(dice, nan=1.0)]


def score_cases(engine: Engine, cases: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Dice per label of each case (``image``/``label`` paths) through the real engine, on full volumes.

    An annotation engine gets the exact extreme points of all labelled voxels (one object), as a
    user's six clicks; a segmentation engine runs on the image alone.
    """
    scores = []
    for case in cases:
        volume = read_volume(case["image"])
        truth = np.rint(read_volume(case["label"]).array).astype(np.uint8)
        if engine.type == "annotation":
            truth = (truth > 0).astype(np.uint8)
            params = {"points": extreme_points(truth > 0).tolist()}
        else:
            params = {}
        result = engine.infer(volume, params)
        scores.append({"image": case["image"], "dice": dice_per_label(result.mask, truth, len(engine.labels))})
    return scores


def summarize(scores: list[dict[str, Any]], labels: list[str]) -> dict[str, Any]:
    """Mean Dice per label and overall over scored cases (a report's summary)."""
    if not scores:
        return {"cases": 0, "mean_dice": None, "dice_per_label": {}}
    per_label = np.mean([s["dice"] for s in scores], axis=0)
    return {"cases": len(scores), "mean_dice": round(float(np.mean(per_label)), 4),
            "dice_per_label": {label: round(float(v), 4) for label, v in zip(labels, per_label)}}
