"""MONAI bundles on real data: served masks against MONAI's own runner, load and request times; prints JSON.

Usage: python bench/bundles.py [--cases 10]

1. The model zoo's spleen_ct_segmentation layout at its real size (UNet 16-32-64-128-256, 96^3
   sliding window, Orientationd + Spacingd 1.5x1.5x2 mm, Invertd), random weights, on the MSD spleen
   CT case: our bundle engine against ``python -m monai.bundle run``.
2. The served hippocampus segmentation (network 1 of its ensemble) exported with
   ``aiaa export --format bundle``, on the first validation cases: MONAI's runner, our bundle engine
   on the export, and our own engine on the same network.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from bundle_helpers import SPLEEN_INFERENCE, SPLEEN_METADATA, entry, run_monai, write_bundle  # noqa: E402

from engines.backends import load_backend  # noqa: E402
from engines.config.model import load_model_config  # noqa: E402
from engines.data.datalist import load_datalist  # noqa: E402
from engines.data.io import read_volume  # noqa: E402
from engines.export.bundle import export_bundle  # noqa: E402
from engines.tasks.bundle import load_bundle_engine  # noqa: E402
from engines.tasks.segmentation import SegmentationEngine  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SPLEEN_CASE = DATA / "msd_spleen_1case" / "spleen_2_ct.nii.gz"
HIPPOCAMPUS = DATA / "msd_hippocampus"
HIPPOCAMPUS_CONFIG = ROOT / "model_configs" / "segmentation_mri_hippocampus.json"


def _timed(fn, repeats: int = 3) -> tuple[object, float]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return out, round(statistics.median(times) * 1000.0, 1)


def spleen(work: Path) -> dict:
    inference = copy.deepcopy(SPLEEN_INFERENCE)
    inference["network_def"]["channels"] = [16, 32, 64, 128, 256]
    inference["network_def"]["strides"] = [2, 2, 2, 2]
    inference["network_def"]["num_res_units"] = 2
    bundle = write_bundle(work / "spleen_ct_segmentation", inference, SPLEEN_METADATA)
    images = work / "spleen_images" / "imagesTs"
    images.mkdir(parents=True)
    (images / SPLEEN_CASE.name).symlink_to(SPLEEN_CASE)
    start = time.perf_counter()
    engine = load_bundle_engine(entry(bundle), Path("/"))
    load_ms = round((time.perf_counter() - start) * 1000.0, 1)
    volume = read_volume(SPLEEN_CASE)
    result, request_ms = _timed(lambda: engine.infer(volume, {}))
    start = time.perf_counter()
    run_monai(bundle, None, work / "spleen_eval", dataset_dir=str(images.parent))
    runner_s = round(time.perf_counter() - start, 1)
    expected = read_volume(next((work / "spleen_eval").rglob("*.nii.gz"))).array.astype(np.uint8)
    return {"case": SPLEEN_CASE.name, "shape": list(volume.shape), "spacing": list(volume.geometry.spacing),
            "bundle_load_ms": load_ms, "request_ms_median_of_3": request_ms, "stages_ms": result.timings,
            "monai_runner_wall_s": runner_s, "voxels": int(expected.size),
            "voxels_differing_from_monai": int((result.mask != expected).sum()),
            "labels_present": sorted(int(v) for v in np.unique(result.mask))}


def hippocampus(work: Path, cases: int) -> dict:
    bundle = work / "hippocampus_bundle"
    export_bundle(HIPPOCAMPUS_CONFIG, bundle, member=1)
    config = load_model_config(HIPPOCAMPUS_CONFIG).members()[0].model_copy(
        update={"model_format": "pytorch", "exports": []})
    ours = SegmentationEngine("hippocampus_member1", config, load_backend(config, HIPPOCAMPUS_CONFIG.parent))
    back = load_bundle_engine(entry(bundle), Path("/"))
    images = work / "hippocampus_images"
    images.mkdir()
    paths = [Path(c["image"]) for c in load_datalist(HIPPOCAMPUS / "datalist.json")["validation"][:cases]]
    for path in paths:
        (images / path.name).symlink_to(path)
    start = time.perf_counter()
    run_monai(bundle, None, work / "hippocampus_eval", dataset_dir=str(images))
    runner_s = round(time.perf_counter() - start, 1)
    differing, back_differing, ours_ms, back_ms = 0, 0, [], []
    for path in paths:
        volume = read_volume(path)
        mine, t_ours = _timed(lambda: ours.infer(volume, {}).mask)
        theirs, t_back = _timed(lambda: back.infer(volume, {}).mask)
        stem = path.name[: -len(".nii.gz")]
        runner = read_volume(work / "hippocampus_eval" / f"{stem}_seg.nii.gz").array
        differing += int((mine != runner).sum())
        back_differing += int((theirs != mine).sum())
        ours_ms.append(t_ours)
        back_ms.append(t_back)
    return {"cases": len(paths), "voxels_differing_monai_runner_vs_our_engine": differing,
            "voxels_differing_bundle_engine_vs_our_engine": back_differing,
            "our_engine_request_ms_median": statistics.median(ours_ms),
            "bundle_engine_request_ms_median": statistics.median(back_ms), "monai_runner_wall_s": runner_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10, help="hippocampus validation cases")
    args = parser.parse_args()
    import torch

    with tempfile.TemporaryDirectory(prefix="bench-bundles-") as tmp:
        report = {"torch_threads": torch.get_num_threads(), "spleen_ct_segmentation_layout": spleen(Path(tmp)),
                  "hippocampus_export": hippocampus(Path(tmp), args.cases)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
