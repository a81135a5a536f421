"""Polygons of AIAA's polygon editing (``/v1/mask2polygon``, ``/v1/fixpolygon``), as NVIDIA's clients use them.

mask2polygon: one entry per slice along the third voxel axis ``k``, each a list of polygons,
each a list of ``[j, i]`` points (protocol notes section 6). fixpolygon moves one vertex by an offset
and drags its neighbours along with a weight that falls off linearly (``propagate_neighbor``
along the polygon, ``propagate_neighbor_3d`` across slices), then fills the polygons again:
a 2D PNG slice takes ``[x, y]`` = ``[i, j]`` points, a 3D volume mask2polygon's ``[j, i]``.
Filling is even-odd, so a polygon inside another is a hole.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from skimage.draw import polygon as fill_polygon
from skimage.draw import polygon_perimeter
from skimage.measure import approximate_polygon, find_contours

from engines.errors import InvalidInputError, InvalidPointsError

__all__ = ["PolygonEdit", "fill_polygons", "mask_to_polygons", "move_vertex", "parse_edit", "tolerance_for"]

Polygon = list[list[int]]


def tolerance_for(more_points: Any) -> float:
    """Simplification tolerance in voxels for ``more_points`` (larger: more vertices; 10 gives 1 voxel)."""
    try:
        ratio = float(more_points if more_points not in (None, "") else 10)
    except (TypeError, ValueError):
        raise InvalidInputError(f"'more_points' must be a number; got {more_points!r}") from None
    if not np.isfinite(ratio) or ratio <= 0:
        raise InvalidInputError(f"'more_points' must be positive; got {more_points!r}")
    return float(np.clip(10.0 / ratio, 0.25, 5.0))


def _snap(contour: np.ndarray, padded: np.ndarray, value: int) -> np.ndarray:
    """Contour points (on pixel edges) moved onto the neighbouring pixel centre that holds ``value``."""
    lo, hi = np.floor(contour).astype(int), np.ceil(contour).astype(int)
    take_lo = padded[lo[:, 0], lo[:, 1]] == value
    return np.where(take_lo[:, None], lo, hi)


def _slice_polygons(plane: np.ndarray, tolerance: float) -> list[Polygon]:
    """Outlines of a 2D ``[i, j]`` mask as ``[j, i]`` integer polygons (holes included).

    Vertices are the centres of the outline's pixels: an object's outermost foreground pixels,
    a hole's outermost background pixels, so that :func:`fill_polygons` gives the mask back.
    """
    padded = np.pad(plane.astype(np.uint8), 1)
    polygons = []
    for contour in find_contours(padded, 0.5):
        rows, cols = contour[:, 0], contour[:, 1]
        hole = np.sum(rows[:-1] * cols[1:] - rows[1:] * cols[:-1]) > 0  # find_contours turns holes the other way
        path = _snap(contour, padded, 0 if hole else 1)
        path = path[np.r_[True, (np.diff(path, axis=0) != 0).any(1)]]
        points = np.rint(approximate_polygon(path.astype(float), tolerance)).astype(int) - 1
        if len(points) > 1 and (points[0] == points[-1]).all():  # closed: the last point repeats the first
            points = points[:-1]
        polygons.append([[int(j), int(i)] for i, j in points])  # a one- or two-pixel region stays degenerate
    return polygons


def mask_to_polygons(mask: np.ndarray, tolerance: float) -> list[list[Polygon]]:
    """Per slice ``k`` of an ``[i, j, k]`` mask, its polygons of ``[j, i]`` points (``[]`` for an empty slice)."""
    if mask.ndim != 3:
        raise InvalidInputError(f"mask2polygon takes a 3D mask; got {mask.ndim}D of size {list(mask.shape)}")
    binary = mask > 0
    filled = binary.any(axis=(0, 1))
    return [_slice_polygons(binary[:, :, k], tolerance) if filled[k] else [] for k in range(binary.shape[2])]


def fill_polygons(polygons: Sequence[Polygon], shape: tuple[int, int], swap: bool) -> np.ndarray:
    """A 2D ``[i, j]`` mask of the polygons (even-odd fill, outline included); ``swap``: points are ``[j, i]``."""
    out = np.zeros(shape, bool)
    for polygon in polygons:
        pts = np.asarray(polygon, dtype=float).reshape(-1, 2)
        if len(pts) == 0:
            continue
        i, j = (pts[:, 1], pts[:, 0]) if swap else (pts[:, 0], pts[:, 1])
        region = np.zeros(shape, bool)
        rr, cc = fill_polygon(i, j, shape=shape)
        region[rr, cc] = True
        rr, cc = polygon_perimeter(np.rint(i).astype(int), np.rint(j).astype(int), shape=shape, clip=False)
        keep = (rr >= 0) & (rr < shape[0]) & (cc >= 0) & (cc < shape[1])
        region[rr[keep], cc[keep]] = True
        out ^= region
    return out


@dataclass(frozen=True)
class PolygonEdit:
    """One dragged vertex of fixpolygon's ``params``."""

    dimension: int
    polygons: list  # 2D: list of polygons; 3D: per slice, a list of polygons
    polygon_index: int
    vertex_index: int
    offset: tuple[float, float]
    neighbours: int
    slice_index: int = 0
    neighbours_3d: int = 0


def _get(params: dict[str, Any], *names: str, default: Any = None) -> Any:
    for name in names:
        if name in params and params[name] is not None:
            return params[name]
    return default


def _int(value: Any, name: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < minimum:
        raise InvalidPointsError(f"'{name}' must be an integer >= {minimum}; got {value!r}")
    return int(value)


def parse_edit(params: dict[str, Any]) -> PolygonEdit:
    """Read fixpolygon's params (snake_case, or the camelCase of older clients)."""
    poly = _get(params, "poly", "prev_poly")
    if isinstance(poly, str):
        try:
            poly = json.loads(poly)
        except json.JSONDecodeError:
            raise InvalidPointsError("'poly' is a string that is not JSON") from None
    if not isinstance(poly, list) or not poly:
        raise InvalidPointsError("'poly' must be the polygons (a list; per slice for dimension 3)")
    dimension = _int(_get(params, "dimension", default=2), "dimension", 2)
    if dimension not in (2, 3):
        raise InvalidPointsError(f"'dimension' must be 2 or 3; got {dimension}")
    offset = _get(params, "vertex_offset", "vertexOffset")
    if (not isinstance(offset, (list, tuple)) or len(offset) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in offset)):
        raise InvalidPointsError("'vertex_offset' must be [dx, dy]")
    edit = PolygonEdit(
        dimension, poly,
        _int(_get(params, "polygon_index", "polygonIndex"), "polygon_index"),
        _int(_get(params, "vertex_index", "vertexIndex"), "vertex_index"),
        (float(offset[0]), float(offset[1])),
        _int(_get(params, "propagate_neighbor", "propagateNeighbor", default=1), "propagate_neighbor"),
        _int(_get(params, "slice_index", "sliceIndex", default=0), "slice_index"),
        _int(_get(params, "propagate_neighbor_3d", "propagateNeighbor3d", default=0), "propagate_neighbor_3d"),
    )
    polygons = poly[edit.slice_index] if dimension == 3 and edit.slice_index < len(poly) else poly
    if dimension == 3 and edit.slice_index >= len(poly):
        raise InvalidPointsError(f"'slice_index' {edit.slice_index} is beyond the {len(poly)} slices of 'poly'")
    if edit.polygon_index >= len(polygons) or not isinstance(polygons[edit.polygon_index], list):
        raise InvalidPointsError(f"'polygon_index' {edit.polygon_index} is beyond the {len(polygons)} polygons")
    if edit.vertex_index >= len(polygons[edit.polygon_index]):
        raise InvalidPointsError(f"'vertex_index' {edit.vertex_index} is beyond the polygon's "
                                 f"{len(polygons[edit.polygon_index])} vertices")
    return edit


def _drag(polygon: Polygon, index: int, offset: np.ndarray, neighbours: int, weight: float) -> Polygon:
    """Move vertex ``index`` by ``weight * offset`` and its neighbours by linearly less."""
    points = np.asarray(polygon, dtype=float).reshape(-1, 2)
    n = len(points)
    reach = min(neighbours, (n - 1) // 2)
    for step in range(-reach, reach + 1):
        points[(index + step) % n] += offset * weight * (1.0 - abs(step) / (reach + 1))
    return np.rint(points).astype(int).tolist()


def move_vertex(edit: PolygonEdit) -> list:
    """The polygons after the drag, in the request's structure."""
    offset = np.asarray(edit.offset, dtype=float)
    if edit.dimension == 2:
        out = [list(p) for p in edit.polygons]
        out[edit.polygon_index] = _drag(out[edit.polygon_index], edit.vertex_index, offset, edit.neighbours, 1.0)
        return out
    out = [[list(p) for p in polygons] for polygons in edit.polygons]
    anchor = np.asarray(edit.polygons[edit.slice_index][edit.polygon_index][edit.vertex_index], dtype=float)
    reach = edit.neighbours_3d
    for delta in range(-reach, reach + 1):
        k = edit.slice_index + delta
        if not 0 <= k < len(out) or edit.polygon_index >= len(out[k]) or not out[k][edit.polygon_index]:
            continue
        polygon = out[k][edit.polygon_index]
        if delta == 0:
            index = edit.vertex_index
        else:  # the vertex of the neighbouring slice's polygon nearest to the dragged one
            index = int(np.argmin(((np.asarray(polygon, dtype=float) - anchor) ** 2).sum(1)))
        weight = 1.0 - abs(delta) / (reach + 1)
        out[k][edit.polygon_index] = _drag(polygon, index, offset, edit.neighbours, weight)
    return out
