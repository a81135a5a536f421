"""Where a 2D box's mask goes wrong, slice by slice: z coverage and in-plane Dice (card, "Unseen structures").

For each validation object of one structure, the mask from the protocol's first prompt (2D box on the
largest axial slice) is compared with the truth per axial slice: which share of the object's slices the
mask reaches, how many slices it overflows onto, and the Dice on the slices both share. With
``--clicks N`` the same for the mask after the protocol's N corrective clicks, and where its errors
lie: the share of them in the largest 26-connected error component (where the next click would go),
the share of the slices (the object's or the mask's) that component spans, and the missed and
overflowing voxels per object voxel. Prints JSON.

    python bench/interactive_slice_diagnosis.py RUN_CONFIG [RUN_CONFIG ...] \
        [--datalist models/interactive_any/datalists/acdc.json] [--structure lv] [--clicks 5]

RUN_CONFIG is a model config (the run's interactive_any_last.json that evaluate_without_acdc.sh writes,
or model_configs/interactive_any.json); its PyTorch weights are used, without test-time flips.
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
    largest_error,
    load_interactive_datalist,
    object_volumes,
    protocol_masks,
    validation_objects,
)
from engines.evaluation.scoring import binary_dice
from engines.networks import build_network
from engines.tasks.interaction import network_callable


def slice_figures(mask: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """How one mask covers its object slice by slice: slices reached, slices overflowed, in-plane and 3D Dice."""
    truth_slices, mask_slices = truth.any(axis=(0, 1)), mask.any(axis=(0, 1))
    both = np.flatnonzero(truth_slices & mask_slices)
    return {"dice": binary_dice(mask, truth),
            "slices_reached": float((truth_slices & mask_slices).sum() / truth_slices.sum()),
            "slices_overflowed": float((mask_slices & ~truth_slices).sum()),
            "inplane_dice_on_shared_slices":
                float(np.mean([binary_dice(mask[..., z], truth[..., z]) for z in both])) if both.size else 0.0}


def error_figures(mask: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Where a mask's errors are: the share of them in the largest 26-connected error component (where
    the protocol's next click goes), the share of the slices holding the object or the mask that this
    component spans, and the missed and overflowing voxels per object voxel."""
    found = largest_error(mask, truth)
    if found is None:
        return {"largest_error_share": 0.0, "largest_error_slice_span": 0.0, "missed": 0.0, "overflow": 0.0}
    component, _ = found
    errors = int((mask != truth).sum())
    size = int(truth.sum())
    return {"largest_error_share": float(component.sum() / errors),
            "largest_error_slice_span": float(component.any(axis=(0, 1)).sum() / (truth | mask).any(axis=(0, 1)).sum()),
            "missed": float((truth & ~mask).sum() / size), "overflow": float((mask & ~truth).sum() / size)}


def mean_figures(rows: list[dict[str, float]]) -> dict[str, float]:
    """The mean of each figure over the objects, rounded."""
    return {key: round(float(np.mean([r[key] for r in rows])), 4) for key in rows[0]}


def diagnose(config_path: str, datalist: str, structure: str, clicks: int = 0) -> dict:
    """Per-slice figures of the first prompt's masks for one model config (and, with ``clicks``, of the
    masks after that many of the protocol's corrective clicks, with where their errors lie)."""
    config = load_model_config(config_path)
    network = build_network(config.network)
    network.load_state_dict(load_state_dict(Path(config_path).parent / config.model_path))
    network.eval()
    predict = network_callable(network)
    objects = [o for o in validation_objects(load_interactive_datalist(datalist)) if o.structure == structure]
    first, last = [], []
    for _, image, truth, spacing in object_volumes(objects):
        truth = truth.astype(bool, copy=False)
        masks = [mask for _, mask, _ in  # each step's mask is a new bool array (predict_step copies)
                 protocol_masks(predict, image, spacing, truth, tuple(config.roi), variant="box", n_clicks=clicks,
                                interactive=interactive_settings(config))]
        first.append(slice_figures(masks[0], truth))
        if clicks:
            last.append(slice_figures(masks[-1], truth) | error_figures(masks[-1], truth))
    figures = mean_figures(first)
    report = {"config": config_path, "objects": len(objects), "dice_box": figures.pop("dice"),
              **{key: round(value, 2) if key == "slices_overflowed" else value for key, value in figures.items()}}
    if clicks:
        report[f"after_{clicks}_clicks"] = mean_figures(last)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+")
    parser.add_argument("--datalist", default="models/interactive_any/datalists/acdc.json")
    parser.add_argument("--structure", default="lv")
    parser.add_argument("--clicks", type=int, default=0,
                        help="also diagnose the mask after this many of the protocol's corrective clicks")
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = [diagnose(c, args.datalist, args.structure, args.clicks) for c in args.configs]
    print(json.dumps({"datalist": args.datalist, "structure": args.structure, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
