"""Validation Dice of the served hippocampus models, on the paths a user's clicks take; prints JSON.

Usage: python bench/eval_hippocampus.py [--split validation] [--config engine_pool.json]

- annotation, full volume, exact extreme points of the label (Slicer with session, OHIF, curl);
- annotation, full volume, clicks jittered by up to 2 voxels per axis (seeded);
- annotation through NVIDIA's Python client pre-processing (crop +-20 mm, resampled to 128^3,
  mask resampled back by the client) -- the default path of the Python client and Slicer;
- segmentation, Dice per label.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from helpers import client_crop, client_uncrop  # noqa: E402

from engines.data.io import read_volume  # noqa: E402
from engines.evaluation.scoring import dice_per_label  # noqa: E402
from engines.serving.pool import EnginePool  # noqa: E402
from engines.transforms.points import extreme_points  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "msd_hippocampus"


def summary(values: list) -> dict:
    arr = np.asarray(values, dtype=float)
    return {"mean": np.round(arr.mean(axis=0), 4).tolist(), "min": np.round(arr.min(axis=0), 4).tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--split", default="validation")
    parser.add_argument("--config", default=str(ROOT / "engine_pool.json"))
    args = parser.parse_args()
    cases = json.loads((DATA / "datalist.json").read_text())[args.split]
    pool = EnginePool.from_file(args.config)
    annotation = pool.get("annotation_mri_hippocampus")
    segmentation = pool.get("segmentation_mri_hippocampus")
    rng = np.random.RandomState(0)
    exact, jittered, client, seg = [], [], [], []
    start = time.time()
    for case in cases:
        volume = read_volume(DATA / case["image"])
        label = np.rint(read_volume(DATA / case["label"]).array).astype(np.uint8)
        whole = (label > 0).astype(np.uint8)
        points = extreme_points(whole > 0)
        exact.append(dice_per_label(annotation.infer(volume, {"points": points.tolist()}).mask, whole, 1))
        noisy = extreme_points(whole > 0, rng, perturbation=2.0)
        jittered.append(dice_per_label(annotation.infer(volume, {"points": noisy.tolist()}).mask, whole, 1))
        cropped, crop_points, low, size = client_crop(volume, points.astype(int).tolist())
        reply = annotation.infer(cropped, {"points": crop_points}).mask
        client.append(dice_per_label(client_uncrop(reply, low, size, whole.shape), whole, 1))
        seg.append(dice_per_label(segmentation.infer(volume, {}).mask, label, 2))
    print(json.dumps({
        "data": f"MSD Task04 Hippocampus, {args.split} split of {DATA / 'datalist.json'}",
        "cases": len(cases),
        "annotation_exact_points_dice": summary(exact),
        "annotation_jittered_points_dice": summary(jittered),
        "annotation_python_client_crop_dice": summary(client),
        "segmentation_dice_per_label": {"labels": segmentation.labels, **summary(seg)},
        "wall_time_s": round(time.time() - start, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
