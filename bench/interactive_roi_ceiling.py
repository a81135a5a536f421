"""The Dice and NSD a perfect interactive model could reach through a config's crop and ROI.

Usage: python bench/interactive_roi_ceiling.py --config model_configs/interactive_any.json \
           --datalist D [--datalist D2 ...] [--max-objects N]

Every step of an interactive model sees its crop resampled to the ROI and pastes its logits back
at the crop's resolution, so detail finer than the ROI's voxels is lost whatever the network
does. For each validation object this takes the crop a converged interaction looks at (the
protocol's 2D box on the largest axial slice and the object itself as the current mask, with the
config's margin and minimum size), sends the object through the same ``encode`` (its mask
channel, resampled to the ROI) and ``to_crop`` (back, thresholded) that serving uses, and scores
what comes back against the object with the protocol's Dice and NSD (2 mm). It prints JSON: the
mean per dataset and structure and overall, and the crop's mean size in mm of one ROI voxel per axis.
A model's protocol figures above this ceiling are impossible; far below it, the ROI is not what
limits them. No network runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.config.model import load_model_config
from engines.evaluation.interactive import (
    dice_nsd,
    interactive_settings,
    largest_slice_box,
    load_interactive_datalist,
    object_volumes,
    validation_objects,
)
from engines.transforms.prompts import CHANNELS, crop_box, encode, to_crop

MASK_CHANNEL = CHANNELS.index("mask")


def ceiling(truth: np.ndarray, image: np.ndarray, spacing: tuple[float, float, float], roi: list[int],
            margin: float, min_size_mm: float) -> tuple[float, float, np.ndarray]:
    """``(dice, nsd, mm per ROI voxel)`` of ``truth`` sent to the ROI and back through its converged crop."""
    box = largest_slice_box(truth)
    lo, hi = crop_box(image.shape, spacing, [box], truth, margin=margin, min_size_mm=min_size_mm)
    resampled = encode(image, truth.astype(np.float32), [box], lo, hi, roi)[MASK_CHANNEL]
    back = np.zeros_like(truth)
    back[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))] = to_crop(resampled - 0.5, lo, hi)
    dice, nsd = dice_nsd(back, truth, spacing)
    return dice, nsd, (hi - lo) * np.asarray(spacing) / np.asarray(roi)


def main() -> None:
    """Parse the arguments, score every object, print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="an interactive ('deepgrow') model config")
    parser.add_argument("--datalist", action="append", required=True, help="an interactive datalist (repeatable)")
    parser.add_argument("--max-objects", type=int, default=None, help="the first N objects of each datalist")
    args = parser.parse_args()

    config = load_model_config(args.config)
    settings = interactive_settings(config)
    margin, min_size_mm = settings["margin"], settings["min_size_mm"]
    groups: dict[str, list[tuple[float, float, np.ndarray]]] = defaultdict(list)
    for path in args.datalist:
        objects = validation_objects(load_interactive_datalist(path))[: args.max_objects]
        for spec, image, truth, spacing in object_volumes(objects):
            score = ceiling(truth, image, spacing, list(config.roi), margin, min_size_mm)
            for name in (f"{spec.dataset}/{spec.structure}", spec.dataset, "overall"):
                groups[name].append(score)

    def mean(scores: list[tuple[float, float, np.ndarray]]) -> dict:
        return {"objects": len(scores), "dice": round(float(np.mean([s[0] for s in scores])), 4),
                "nsd": round(float(np.mean([s[1] for s in scores])), 4),
                "mm_per_roi_voxel": [round(float(v), 2) for v in np.mean([s[2] for s in scores], axis=0)]}

    print(json.dumps({"config": args.config, "roi": list(config.roi), "margin": margin, "min_size_mm": min_size_mm,
                      "groups": {name: mean(scores) for name, scores in sorted(groups.items())}}, indent=2))


if __name__ == "__main__":
    main()
