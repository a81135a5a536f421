"""Self-supervised training objects: intensity-homogeneous regions of unlabelled images.

An interactive model should segment whatever region a box or a click points at, including structures
no dataset labels. Regions cut from the images themselves (SLIC supervoxels merged across weak edges,
as in the pseudo-objects of SAM-style training) give it objects of every size, shape and contrast
without new labels. :func:`supervoxel_regions` makes one label map per image and threshold;
:func:`write_supervoxel_datalist` writes them with an interactive datalist that training reads like any
other (``label_<v>`` structures, as for a datalist without ``"structures"``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage import graph
from skimage.exposure import equalize_hist
from skimage.segmentation import slic

from engines.data.io import Volume, read_volume, write_volume_file

MAX_SLIC_VOXELS = 2_000_000  # larger volumes are cut on a strided grid, then the labels brought back
SMOOTHING = 0.5  # voxels: enough against noise, little enough to keep small structures' edges
MERGE_THRESHOLDS = (0.03, 0.06)  # mean-intensity distance (scaled 0..1) below which neighbours merge


def supervoxel_regions(image: np.ndarray, spacing: Sequence[float], threshold: float, *, segments: int = 250,
                       max_regions: int = 40, min_voxels: int = 200, max_fraction: float = 0.25,
                       seed: int = 0) -> np.ndarray:
    """A label map (uint8, ``image``'s shape) of up to ``max_regions`` regions numbered 1.. in random order.

    The image is smoothed and scaled to 0..1 half by its histogram's ranks (so CT's soft tissue spreads
    out) and half linearly between its 0.5 and 99.5 percentiles (so small bright or dark structures keep
    their contrast, which ranks squeeze into a sliver), cut into about ``segments`` SLIC supervoxels (in
    mm of ``spacing``), and neighbours whose mean intensities differ by less than ``threshold`` are
    merged. Regions under ``min_voxels`` or over
    ``max_fraction`` of the foreground are dropped (background and body outlines are not objects).
    """
    array = np.asarray(image, np.float32)
    foreground = array > np.percentile(array, 1)
    smooth = ndimage.gaussian_filter(array, SMOOTHING)
    low, high = np.percentile(smooth[foreground], [0.5, 99.5])
    linear = np.clip((smooth - low) / max(float(high - low), 1e-6), 0, 1)
    scaled = (0.5 * equalize_hist(smooth, mask=foreground) + 0.5 * linear).astype(np.float32)
    step = max(1, int(np.ceil((array.size / MAX_SLIC_VOXELS) ** (1 / 3))))
    small = scaled[::step, ::step, ::step]
    cut = slic(small, n_segments=segments, compactness=0.05, channel_axis=None,
               spacing=np.asarray(spacing, float) * step, start_label=1, mask=foreground[::step, ::step, ::step])
    rag = graph.rag_mean_color(np.repeat(small[..., None], 3, axis=-1), cut, connectivity=2, mode="distance")
    merged = graph.cut_threshold(cut, rag, threshold)
    if step > 1:
        merged = np.repeat(np.repeat(np.repeat(merged, step, 0), step, 1), step, 2)
        merged = merged[tuple(slice(0, n) for n in array.shape)]
    sizes = np.bincount(merged.ravel())
    inside = np.bincount(merged.ravel(), weights=foreground.ravel(), minlength=len(sizes))
    largest = max_fraction * foreground.sum()
    keep = [v for v in np.flatnonzero(sizes >= min_voxels)
            if v and sizes[v] <= largest and inside[v] > 0.5 * sizes[v]]
    rng = np.random.default_rng(seed)
    keep = list(rng.permutation(keep))[:max_regions]
    lookup = np.zeros(int(merged.max()) + 1, np.uint8)
    lookup[np.asarray(keep, int)] = np.arange(1, len(keep) + 1)
    return lookup[merged]


def write_supervoxel_datalist(images: Sequence[str | Path], output_dir: str | Path,
                              thresholds: Sequence[float] = MERGE_THRESHOLDS,
                              progress: Callable[[str], None] = print) -> Path:
    """Label maps of every image at every threshold in ``output_dir``, and ``supervoxels.json`` there (an
    interactive datalist, dataset ``supervoxels``, all cases in ``training``, paths relative to it)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    cases = []
    for n, path in enumerate(images):
        volume = read_volume(str(path))
        array = np.asarray(volume.array)
        for t, threshold in enumerate(thresholds):
            labels = supervoxel_regions(array, volume.geometry.spacing[:3], threshold, seed=n * len(thresholds) + t)
            name = f"{n:03d}_{Path(path).name.split('.')[0]}_t{t}.nii.gz"
            write_volume_file(Volume(labels, volume.geometry), out / name, dtype=np.uint8)
            cases.append({"image": os.path.relpath(Path(path).resolve(), out.resolve()), "label": name})
            progress(f"{path}: {int(labels.max())} regions at threshold {threshold}")
    datalist = out / "supervoxels.json"
    datalist.write_text(json.dumps({"dataset": "supervoxels", "training": cases, "validation": []}, indent=1) + "\n")
    return datalist
