"""Pictures of a volume with a mask: axial, sagittal and coronal views through one point.

Views are in radiological orientation (the patient's right on the picture's left, anterior
and superior up) whatever the voxel order on disk: the grid is turned to the nearest
LPS axis order using its direction cosines (an oblique grid is shown along its nearest
axes). Pixels are drawn in millimetres, so anisotropic voxels keep their true aspect.
Rendering uses matplotlib's Agg canvas directly (no pyplot global state).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engines.data.io import Volume, same_grid
from engines.errors import InvalidInputError

__all__ = ["LABEL_COLOURS", "PANEL_PIXELS", "LEGEND_PIXELS", "render_snapshot", "snapshot_centre"]

# One colour per label value 1, 2, ... (repeats after the last).
LABEL_COLOURS = (
    (1.0, 0.0, 0.0), (0.0, 0.8, 0.0), (0.0, 0.4, 1.0), (1.0, 0.85, 0.0), (0.0, 0.9, 0.9),
    (1.0, 0.0, 1.0), (1.0, 0.5, 0.0), (0.6, 0.3, 1.0), (0.6, 1.0, 0.4), (1.0, 0.6, 0.7),
)
PANEL_PIXELS = 256
LEGEND_PIXELS = 40
_DPI = 100
_VIEWS = ("axial", "coronal", "sagittal")


@dataclass(frozen=True)
class _Canonical:
    """How array axes map onto LPS world axes: ``array.transpose(order)`` then flip ``flips``."""

    order: tuple[int, int, int]
    flips: tuple[bool, bool, bool]
    spacing: tuple[float, float, float]

    def array(self, array: np.ndarray) -> np.ndarray:
        out = np.transpose(array, self.order)
        for axis, flip in enumerate(self.flips):
            if flip:
                out = np.flip(out, axis)
        return out

    def index(self, index: Sequence[float], shape: Sequence[int]) -> list[int]:
        out = []
        for axis, source in enumerate(self.order):
            value = int(round(float(index[source])))
            out.append(shape[source] - 1 - value if self.flips[axis] else value)
        return out


def _canonical(volume: Volume) -> _Canonical:
    direction = np.asarray(volume.geometry.direction, dtype=np.float64).reshape(3, 3)  # column a: array axis a
    weights = np.abs(direction)
    order = [-1, -1, -1]
    for flat in np.argsort(-weights, axis=None):  # greedy: strongest cosine first
        world, axis = divmod(int(flat), 3)
        if order[world] < 0 and axis not in order:
            order[world] = axis
    flips = tuple(bool(direction[world, order[world]] < 0) for world in range(3))
    spacing = tuple(float(volume.geometry.spacing[order[world]]) for world in range(3))
    return _Canonical(tuple(order), flips, spacing)  # type: ignore[arg-type]


def snapshot_centre(mask: np.ndarray | None, shape: Sequence[int]) -> list[int]:
    """The voxel the views go through: the centre of the mask's foreground, else of the grid."""
    if mask is not None and np.any(mask):
        return [int(round(v)) for v in np.argwhere(np.asarray(mask) > 0).mean(axis=0)]
    return [int(s) // 2 for s in shape[:3]]


def _slices(array: np.ndarray, at: Sequence[int], spacing: Sequence[float]):
    """(view, 2D picture rows x columns, imshow extent, origin) in radiological orientation."""
    x, y, z = at
    sx, sy, sz = spacing
    nx, ny, nz = array.shape
    return [
        ("axial", array[:, :, z].T, (0, nx * sx, ny * sy, 0), "upper"),
        ("coronal", array[:, y, :].T, (0, nx * sx, 0, nz * sz), "lower"),
        ("sagittal", array[x, :, :].T, (0, ny * sy, 0, nz * sz), "lower"),
    ]


def _overlay(labels: np.ndarray, alpha: float) -> np.ndarray:
    rgba = np.zeros((*labels.shape, 4), np.float32)
    for value in np.unique(labels):
        if value <= 0:
            continue
        colour = LABEL_COLOURS[(int(value) - 1) % len(LABEL_COLOURS)]
        rgba[labels == value] = (*colour, alpha)
    return rgba


def render_snapshot(
    images: Sequence[Volume],
    mask: Volume | None = None,
    *,
    point: Sequence[float] | None = None,
    labels: Sequence[str] | None = None,
    titles: Sequence[str] | None = None,
    alpha: float = 0.5,
) -> bytes:
    """A PNG: one row per image (a ``[i, j, k, c]`` volume gives one row per channel), three views each.

    The views go through ``point`` (voxel indices ``[i, j, k]`` of the images) or the centre of the
    mask. Mask value n is drawn in ``LABEL_COLOURS[n - 1]`` and named ``labels[n - 1]`` in the legend.
    The picture is ``3 * PANEL_PIXELS`` wide and ``rows * PANEL_PIXELS + LEGEND_PIXELS`` high.

    Raises:
        InvalidInputError: no image, images or mask on different grids, a point outside the grid.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    rows: list[tuple[str, np.ndarray]] = []
    for n, volume in enumerate(images):
        title = titles[n] if titles and n < len(titles) else f"image {n + 1}"
        if volume.array.ndim == 4:
            rows += [(f"{title} [{c}]", volume.array[..., c]) for c in range(volume.shape[3])]
        elif volume.array.ndim == 3:
            rows.append((title, volume.array))
        else:
            raise InvalidInputError(f"{title}: a 3D image is required, got size {list(volume.shape)}")
    if not rows:
        raise InvalidInputError("give at least one image")
    first = images[0]
    shape = first.shape[:3]
    for volume in [*images[1:], *([mask] if mask is not None else [])]:
        if volume.shape[:3] != shape or not same_grid(volume.geometry, first.geometry):
            raise InvalidInputError(
                f"all images and the mask must share one grid: size {list(volume.shape[:3])} spacing "
                f"{list(volume.geometry.spacing)} differs from {list(shape)} {list(first.geometry.spacing)}"
            )
    label_map = np.rint(np.asarray(mask.array)).astype(np.int64) if mask is not None else None
    if point is not None:
        if len(point) != 3 or any(not 0 <= float(p) <= s - 1 for p, s in zip(point, shape)):
            raise InvalidInputError(f"point {list(point)} is not a voxel index [i, j, k] inside {list(shape)}")
        centre = [int(round(float(p))) for p in point]
    else:
        centre = snapshot_centre(label_map, shape)
    grid = _canonical(first)
    at = grid.index(centre, shape)
    overlay = grid.array(label_map) if label_map is not None else None

    width, height = 3 * PANEL_PIXELS, len(rows) * PANEL_PIXELS + LEGEND_PIXELS
    figure = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI, facecolor="black")
    FigureCanvasAgg(figure)
    for r, (title, array) in enumerate(rows):
        data = grid.array(np.asarray(array, dtype=np.float32))
        low, high = np.percentile(data, [0.5, 99.5])
        pictures = _slices(data, at, grid.spacing)
        masks = _slices(overlay, at, grid.spacing) if overlay is not None else [None] * 3
        for c, ((view, picture, extent, origin), masked) in enumerate(zip(pictures, masks)):
            left, bottom = c / 3, 1 - (r + 1) * PANEL_PIXELS / height
            axes = figure.add_axes((left, bottom, 1 / 3, PANEL_PIXELS / height))
            axes.set_facecolor("black")
            axes.imshow(picture, cmap="gray", vmin=low, vmax=max(high, low + 1e-6), extent=extent, origin=origin,
                        interpolation="nearest")
            if masked is not None:
                axes.imshow(_overlay(masked[1], alpha), extent=extent, origin=origin, interpolation="nearest")
            axes.set_axis_off()
            axes.text(0.02, 0.98, f"{title} {view}", color="white", fontsize=7, va="top", transform=axes.transAxes)
            if view in ("axial", "coronal"):  # radiological: the patient's right is on the left
                axes.text(0.02, 0.02, "R", color="yellow", fontsize=7, transform=axes.transAxes)
                axes.text(0.95, 0.02, "L", color="yellow", fontsize=7, transform=axes.transAxes)
    if label_map is not None:
        values = [int(v) for v in np.unique(label_map) if v > 0]
        handles = [Patch(facecolor=LABEL_COLOURS[(v - 1) % len(LABEL_COLOURS)],
                         label=labels[v - 1] if labels and v <= len(labels) else f"label {v}") for v in values]
        if handles:
            figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=8,
                          frameon=False, labelcolor="white")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, facecolor="black")
    return buffer.getvalue()
