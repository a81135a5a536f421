"""Synthetic training objects: hollow and thin shapes painted into real images.

The leave-one-family-out runs showed what an interactive model trained on solid organs does with a
structure it has never seen: it fills a ring's box and answers clicks on a thin wall with blobs (the
model card's "Unseen structures"). The labelled data here has few hollow or thin objects. This paints
such shapes into real images, each a wall around an interior of another intensity: rings (tapered
annuli over a run of slices), open rings, ellipsoidal shells and tubes, at random orientations, with
intensities drawn from the image's own range so that nothing marks them as painted but their shape.
:func:`paint_shapes` makes one painted image and its label map; :func:`write_shapes_datalist` writes
them with an interactive datalist whose structures are each object's wall, interior and both.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from engines.data.io import Volume, read_volume, write_volume_file

__all__ = ["SHAPES", "paint_shapes", "shape_structures", "write_shapes_datalist"]

SHAPES = ("ring", "open_ring", "shell", "tube")
OBJECTS_PER_IMAGE = 4
REACH_MM = 60.0  # half the side of the box a shape is drawn in: holds the longest tube at any angle


def _shape(kind: str, coords: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(wall, interior)`` masks of one shape over ``coords`` ``(..., 3)``, in mm about its centre, in its frame."""
    x, y, z = coords[..., 0], coords[..., 1], coords[..., 2]
    outer = rng.uniform(8.0, 28.0)
    thickness = rng.uniform(2.0, min(8.0, outer / 2))
    if kind == "shell":
        axes = outer * rng.uniform(0.7, 1.3, 3)
        r = np.sqrt((x / axes[0]) ** 2 + (y / axes[1]) ** 2 + (z / axes[2]) ** 2) * outer
        return (r <= outer) & (r > outer - thickness), r <= outer - thickness
    half_length = rng.uniform(10.0, 40.0) if kind != "tube" else rng.uniform(25.0, 50.0)
    # rings taper towards one end, as a ventricle does towards its apex; tubes keep their calibre
    taper = rng.uniform(0.4, 1.0) if kind != "tube" else 1.0
    radius = outer * (1 - (1 - taper) * np.clip((z + half_length) / (2 * half_length), 0, 1))
    ellipticity = rng.uniform(0.75, 1.25)
    r = np.sqrt((x * ellipticity) ** 2 + (y / ellipticity) ** 2)
    along = np.abs(z) <= half_length
    wall = along & (r <= radius) & (r > radius - thickness)
    interior = along & (r <= radius - thickness)
    if kind == "open_ring":  # a C: the wall is cut over an arc, as the right ventricle wraps the septum
        angle = np.arctan2(y, x)
        start, gap = rng.uniform(-np.pi, np.pi), rng.uniform(0.6, 2.0)
        wall &= np.mod(angle - start, 2 * np.pi) > gap
    return wall, interior


def _contrasting(values: np.ndarray, avoid: Sequence[float], spread: float, rng: np.random.Generator) -> float:
    """An intensity from ``values`` (a sample of the image) at least ``spread`` away from each of ``avoid``."""
    for _ in range(50):
        v = float(rng.choice(values))
        if all(abs(v - a) >= spread for a in avoid):
            return v
    return float(max(avoid) + spread)  # none in the sample: past the brightest one to avoid


def paint_shapes(image: np.ndarray, spacing: Sequence[float], *, objects: int = OBJECTS_PER_IMAGE,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(painted image, labels)``: up to ``objects`` shapes, object ``n`` (0-based) as wall ``2n + 1`` and
    interior ``2n + 2``, centred on voxels inside the body, not overlapping.

    Wall and interior take intensities of the image itself, apart from each other and from the tissue
    around them by at least a third of the body's interquartile range; the painting is blended over
    the image's texture with soft (partial-volume) edges and a little noise.
    """
    rng = np.random.default_rng(seed)
    spacing_a = np.asarray(spacing, dtype=np.float64)
    out = np.asarray(image, dtype=np.float32).copy()
    labels = np.zeros(image.shape, np.uint8)
    low, high = np.percentile(out, [20, 99.5])
    body = np.flatnonzero((out > low).ravel())
    if not len(body):
        return out, labels
    sample = out.ravel()[rng.choice(body, min(len(body), 20000))]
    q1, q3 = np.percentile(sample, [25, 75])
    spread = max(float(q3 - q1) / 3, 1e-3 * float(high - low), 1e-6)
    reach = np.ceil(REACH_MM / spacing_a).astype(int)
    painted = 0
    for _ in range(objects * 10):
        if painted == objects:
            break
        kind = SHAPES[rng.integers(len(SHAPES))]
        centre = np.array(np.unravel_index(rng.choice(body), image.shape))
        lo, hi = np.maximum(centre - reach, 0), np.minimum(centre + reach + 1, image.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        region = out[box]  # a view: painting it paints the image
        grid = np.stack(np.meshgrid(*[(np.arange(a, b) - c) * s for a, b, c, s in zip(lo, hi, centre, spacing_a)],
                                    indexing="ij"), -1)
        wall, interior = _shape(kind, Rotation.random(random_state=rng.integers(2**31)).inv().apply(
            grid.reshape(-1, 3)).reshape(grid.shape), rng)
        inside_body = region > low  # a shape ends where the body does, as an organ would
        wall &= inside_body
        interior &= inside_body
        if wall.sum() < 50 or interior.sum() < 20 or labels[box][wall | interior].any():
            continue
        shape = wall | interior
        rim = ndimage.binary_dilation(shape, iterations=2) & ~shape
        around = float(np.median(region[rim] if rim.any() else sample))  # the tissue the shape sits in
        wall_value = _contrasting(sample, [around], spread, rng)
        inner_value = _contrasting(sample, [around, wall_value], spread, rng)
        strength = rng.uniform(0.7, 1.0)
        noise = rng.normal(0.0, spread * rng.uniform(0.1, 0.5), wall.shape).astype(np.float32)
        for mask, value in ((interior, inner_value), (wall, wall_value)):
            alpha = strength * ndimage.gaussian_filter(mask.astype(np.float32), 0.6)
            region[...] = region * (1 - alpha) + (value + noise) * alpha
        labels[box][interior] = 2 * painted + 2
        labels[box][wall] = 2 * painted + 1
        painted += 1
    return out, labels


def shape_structures(objects: int = OBJECTS_PER_IMAGE) -> dict[str, list[int]]:
    """The datalist's structures: every object's wall, interior and both (``wall_1``, ``interior_1``, ``whole_1``...)."""
    out: dict[str, list[int]] = {}
    for n in range(objects):
        out[f"wall_{n + 1}"] = [2 * n + 1]
        out[f"interior_{n + 1}"] = [2 * n + 2]
        out[f"whole_{n + 1}"] = [2 * n + 1, 2 * n + 2]
    return out


def write_shapes_datalist(images: Sequence[str | Path], output_dir: str | Path, *, copies: int = 2,
                          objects: int = OBJECTS_PER_IMAGE, progress: Callable[[str], None] = print) -> Path:
    """``copies`` painted versions of every image with their label maps in ``output_dir``, and
    ``synthetic_shapes.json`` there (an interactive datalist, dataset ``synthetic_shapes``, all cases in
    ``training``, paths relative to it)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    cases = []
    for n, path in enumerate(images):
        volume = read_volume(str(path))
        for copy in range(copies):
            painted, labels = paint_shapes(np.asarray(volume.array), volume.geometry.spacing[:3], objects=objects,
                                           seed=n * copies + copy)
            stem = f"{n:03d}_{Path(path).name.split('.')[0]}_c{copy}"
            write_volume_file(Volume(painted, volume.geometry), out / f"{stem}_image.nii.gz", dtype=np.float32)
            write_volume_file(Volume(labels, volume.geometry), out / f"{stem}_label.nii.gz", dtype=np.uint8)
            cases.append({"image": f"{stem}_image.nii.gz", "label": f"{stem}_label.nii.gz"})
            progress(f"{path}: {int(labels.max()) // 2} shapes in copy {copy}")
    datalist = out / "synthetic_shapes.json"
    datalist.write_text(json.dumps({"dataset": "synthetic_shapes", "structures": shape_structures(objects),
                                    "training": cases, "validation": []}, indent=1) + "\n")
    return datalist
