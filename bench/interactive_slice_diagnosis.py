"""Where a 2D box's mask goes wrong, slice by slice: z coverage and in-plane Dice (card, "Unseen structures").

For each validation object of one structure, the mask from the protocol's first prompt (2D box on the
largest axial slice) is compared with the truth per axial slice: which share of the object's slices the
mask reaches, how many slices it overflows onto, and the Dice on the slices both share. Prints JSON.

    python bench/interactive_slice_diagnosis.py RUN_CONFIG [RUN_CONFIG ...] \
        [--datalist models/interactive_any/datalists/acdc.json] [--structure lv]

RUN_CONFIG is a model config (the run's interactive_any_last.json that evaluate_without_acdc.sh writes,
or model_configs/interactive_any.json); its PyTorch weights are used.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from engines.backends.pytorch import load_state_dict
from engines.config.model import load_model_config
from engines.evaluation.interactive import (
    interactive_settings,
    largest_slice_box,
    load_interactive_datalist,
    object_volumes,
    validation_objects,
)
from engines.evaluation.scoring import binary_dice
from engines.networks import build_network
from engines.tasks.interaction import network_callable, predict_step


def diagnose(config_path: str, datalist: str, structure: str) -> dict:
    """Per-slice figures of the first prompt's masks for one model config."""
    config = load_model_config(config_path)
    network = build_network(config.network)
    network.load_state_dict(load_state_dict(Path(config_path).parent / config.model_path))
    network.eval()
    predict = network_callable(network)
    objects = [o for o in validation_objects(load_interactive_datalist(datalist)) if o.structure == structure]
    coverage, overflow, inplane, dice = [], [], [], []
    for _, image, truth, spacing in object_volumes(objects):
        mask = predict_step(predict, image, spacing, [largest_slice_box(truth)], None, tuple(config.roi),
                            **interactive_settings(config)).mask
        truth_slices, mask_slices = truth.any(axis=(0, 1)), mask.any(axis=(0, 1))
        coverage.append(float((truth_slices & mask_slices).sum() / truth_slices.sum()))
        overflow.append(int((mask_slices & ~truth_slices).sum()))
        both = np.flatnonzero(truth_slices & mask_slices)
        inplane.append(float(np.mean([binary_dice(mask[..., z], truth[..., z]) for z in both])) if both.size else 0.0)
        dice.append(binary_dice(mask, truth))
    return {"config": config_path, "objects": len(objects), "dice_box": round(float(np.mean(dice)), 4),
            "slices_reached": round(float(np.mean(coverage)), 4),
            "slices_overflowed": round(float(np.mean(overflow)), 2),
            "inplane_dice_on_shared_slices": round(float(np.mean(inplane)), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+")
    parser.add_argument("--datalist", default="models/interactive_any/datalists/acdc.json")
    parser.add_argument("--structure", default="lv")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(json.dumps({"datalist": args.datalist, "structure": args.structure,
                      "runs": [diagnose(c, args.datalist, args.structure) for c in args.configs]}, indent=2))


if __name__ == "__main__":
    main()
