"""Segmentation quality metrics (MONAI's Dice on one-hot masks)."""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import compute_dice

__all__ = ["dice_per_label"]


def dice_per_label(prediction: np.ndarray, truth: np.ndarray, n_labels: int) -> list[float]:
    """Dice of labels 1..n_labels between two label maps of the same shape.

    A label absent from both maps scores 1.0 (nothing to find, nothing found).
    """
    pred = torch.as_tensor(np.asarray(prediction, dtype=np.int64))
    true = torch.as_tensor(np.asarray(truth, dtype=np.int64))
    one_hot = lambda t: torch.stack([t == k for k in range(n_labels + 1)])[None].float()  # noqa: E731
    dice = compute_dice(one_hot(pred), one_hot(true), include_background=False, ignore_empty=False)[0]
    return [float(v) for v in torch.nan_to_num(dice, nan=1.0)]
