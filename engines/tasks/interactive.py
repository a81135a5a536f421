"""The interactive engine kind (model ``type`` ``deepgrow``): points, boxes, scribbles, lassos, masks.

Per image, :meth:`InteractiveEngine.prepare` decodes nothing and normalises once (sessions keep
the result). Per interaction, :meth:`InteractiveEngine.step` runs the shared crop, encode,
predict, zoom-out and paste-back loop of :func:`engines.tasks.interaction.predict_step` with
this model's backend as the network: only the crop goes through it.

The constructors below (:func:`point_prompt`, :func:`box_prompt`, :func:`voxel_prompt`,
:func:`lasso_prompt`) turn what every door receives into :class:`Prompt` objects, checked
against the image; :meth:`InteractiveEngine.infer` answers AIAA's stateless deepgrow call
(``foreground``/``background`` clicks).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from skimage.draw import polygon as fill_polygon

from engines.config.model import InteractiveSpec
from engines.data.io import Geometry, Volume
from engines.errors import InferenceError, InvalidPointsError
from engines.tasks.base import Engine, InferenceResult, Timer
from engines.tasks.interaction import StepResult, logit_threshold, predict_step
from engines.transforms import points as P
from engines.transforms.prompts import CHANNELS, PROMPT_KINDS, Prompt, mask_extent, normalise_volume

__all__ = [
    "InteractiveEngine",
    "PreparedImage",
    "box_prompt",
    "lasso_prompt",
    "point_prompt",
    "voxel_prompt",
]

MAX_PROMPT_POINTS = 100_000  # voxels of one scribble or vertices of one lasso sent as a list


@dataclass(frozen=True)
class PreparedImage:
    """A volume normalised once for interaction (what a session keeps)."""

    image: np.ndarray  # float32 (I, J, K), normalised
    spacing: tuple[float, float, float]

    @property
    def shape(self) -> tuple[int, int, int]:
        """Voxel grid ``(I, J, K)``."""
        return tuple(int(s) for s in self.image.shape)  # type: ignore[return-value]

    @property
    def nbytes(self) -> int:
        """Memory held (for the sessions' budget)."""
        return int(self.image.nbytes)


class InteractiveEngine(Engine):
    """One target object at a time from any mix of prompts and an optional current mask."""

    type: ClassVar[str] = "deepgrow"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.roi = tuple(int(r) for r in self.config.roi)
        self.options: InteractiveSpec = self.config.interactive or InteractiveSpec()
        self._logit_shift = logit_threshold(self.config.thresh)

    def info(self) -> dict[str, Any]:
        """Adds ``deepgrow: "3D"`` (Slicer and XNAT read it), ``roi`` and the prompt kinds served."""
        info = super().info()
        info.update(deepgrow="3D", roi=list(self.roi), prompts=list(PROMPT_KINDS))
        return info

    @property
    def prepare_key(self) -> str:
        """Equal for engines whose :meth:`prepare` gives the same image (sessions reuse it across models)."""
        return f"{self.name}@{self.version}" if self.config.pre_transforms else "normalise_volume"

    def prepare(self, volume: Volume) -> PreparedImage:
        """Check the volume and normalise it once (then every step only crops it)."""
        self.require_3d(volume)
        array = volume.array
        if self.config.pre_transforms:
            data = self.apply(self.pre, {"image": volume}, "pre-processing")
            array = np.asarray(torch.as_tensor(data["image"]), dtype=np.float32)
            array = array[0] if array.ndim == 4 else array
            if array.shape != volume.shape:
                raise InferenceError(f"pre_transforms of an interactive model must keep the grid "
                                     f"{list(volume.shape)}; got {list(array.shape)}")
        return PreparedImage(normalise_volume(array), tuple(float(s) for s in volume.geometry.spacing))

    def network_fn(self, x: np.ndarray) -> np.ndarray:
        """The backend as the ``(C, *roi) -> (*roi)`` logits callable of :func:`predict_step`."""
        out = self.run_network(torch.from_numpy(np.ascontiguousarray(x)))
        return out[0].numpy() - self._logit_shift

    def step(self, prepared: PreparedImage, prompts: Sequence[Prompt], mask: np.ndarray | None,
             timer: Timer | None = None) -> StepResult:
        """Predict the object from every prompt so far and the current mask; post-process the crop.

        With a ``timer``, records ``infer`` (time in the network) and ``interact`` (everything else
        of the step: crop, encode, resample, paste, post-processing) in milliseconds.
        """
        network_ms = 0.0

        def network(x: np.ndarray) -> np.ndarray:
            nonlocal network_ms
            start = time.perf_counter()
            try:
                return self.network_fn(x)
            finally:
                network_ms += (time.perf_counter() - start) * 1000.0

        start = time.perf_counter()
        result = predict_step(network, prepared.image, prepared.spacing, prompts, mask, self.roi,
                              **self.options.model_dump())
        if self.config.post_transforms:
            box = tuple(slice(int(a), int(b)) for a, b in zip(result.lo, result.hi))
            crop = torch.from_numpy(result.mask[box][None].astype(np.uint8))
            crop = self.apply(self.post, {"pred": crop}, "post-processing")["pred"]
            result.mask[box] = np.asarray(torch.as_tensor(crop)[0]) > 0
        if timer is not None:
            total = (time.perf_counter() - start) * 1000.0
            timer.timings["infer"] = round(network_ms, 2)
            timer.timings["interact"] = round(total - network_ms, 2)
        return result

    def infer(self, volume: Volume, params: dict[str, Any]) -> InferenceResult:
        """AIAA deepgrow: ``foreground``/``background`` clicks, full-volume mask and the changed ``crop``."""
        timer = Timer()
        with timer.stage("pre"):
            prepared = self.prepare(volume)
            prompts = deepgrow_prompts(params, prepared.shape)
        result = self.step(prepared, prompts, None, timer)
        timer.timings["total"] = round(sum(timer.timings.values()), 2)
        return InferenceResult(result.mask.astype(np.uint8), deepgrow_reply(result), timer.timings)

    def warmup(self) -> None:
        """One click on a synthetic cube."""
        array = np.zeros((32, 32, 32), np.float32)
        array[8:24, 8:24, 8:24] = 1.0
        prepared = self.prepare(Volume(array, Geometry.identity()))
        self.step(prepared, [point_prompt([16, 16, 16], True, prepared.shape)], None)

    def input_channels(self) -> int:
        """The network takes the prompt encoding's channels."""
        return len(CHANNELS)


# Prompt constructors shared by every door ----------------------------------------------------------


def _as_int_points(raw: Any, what: str, *, max_points: int = MAX_PROMPT_POINTS) -> np.ndarray:
    array = np.asarray(raw, dtype=object) if not isinstance(raw, np.ndarray) else raw
    try:
        points = np.asarray(array, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidPointsError(f"{what} must be a list of [i, j, k] voxel indices") from None
    if points.ndim == 1 and points.size == 3:
        points = points[None]
    if points.ndim != 2 or points.shape[1] != 3 or not np.isfinite(points).all():
        raise InvalidPointsError(f"{what} must be a list of [i, j, k] voxel indices")
    if len(points) > max_points:
        raise InvalidPointsError(f"{what} has {len(points)} points; at most {max_points}")
    return np.rint(points).astype(np.int64)


def point_prompt(point: Any, positive: bool, shape: Sequence[int]) -> Prompt:
    """One click at voxel ``[i, j, k]`` (or several clicks as a list of them)."""
    prompt = Prompt("point", bool(positive), _as_int_points(point, "a point"))
    prompt.check(shape)
    return prompt


def box_prompt(lo: Sequence[int], hi_inclusive: Sequence[int], positive: bool, shape: Sequence[int]) -> Prompt:
    """A box given by two inclusive corners (any order); a 2D box has one axis of size 1."""
    corners = _as_int_points([lo, hi_inclusive], "a box")
    a, b = corners.min(0), corners.max(0) + 1
    prompt = Prompt("box", bool(positive), box=(tuple(map(int, a)), tuple(map(int, b))))
    prompt.check(shape)
    return prompt


def voxel_prompt(kind: str, voxels: Any, positive: bool, shape: Sequence[int]) -> Prompt:
    """A scribble, extreme points or mask prompt from voxel indices ``(N, 3)`` or a boolean mask of ``shape``."""
    if isinstance(voxels, np.ndarray) and voxels.ndim == 3:
        if voxels.shape != tuple(shape):
            raise InvalidPointsError(f"{kind} mask has shape {list(voxels.shape)}; the image has {list(shape)}")
        points = _foreground(voxels)
    else:
        points = _as_int_points(voxels, f"the {kind}")
    if kind == "extreme_points" and len(points) < 1:
        raise InvalidPointsError("extreme_points needs at least one point")
    prompt = Prompt(kind, bool(positive), points)  # type: ignore[arg-type]
    prompt.check(shape)
    return prompt


def lasso_prompt(vertices: Any, positive: bool, shape: Sequence[int]) -> Prompt:
    """A closed contour on one slice, filled: its vertices share one coordinate (the slice axis)."""
    points = _as_int_points(vertices, "a lasso")
    if len(points) < 3:
        raise InvalidPointsError("a lasso needs at least 3 vertices")
    Prompt("lasso", True, points).check(shape)  # vertices inside the volume
    flat = [axis for axis in range(3) if np.ptp(points[:, axis]) == 0]
    if not flat:
        raise InvalidPointsError("a lasso's vertices must lie on one slice (one of i, j, k constant)")
    axis = flat[-1]
    u, v = [a for a in range(3) if a != axis]
    rr, cc = fill_polygon(points[:, u], points[:, v], shape=(shape[u], shape[v]))
    if len(rr) == 0:
        raise InvalidPointsError("the lasso encloses no voxel")
    plane = np.zeros((shape[u], shape[v]), bool)
    plane[rr, cc] = True
    plane[points[:, u], points[:, v]] = True  # the contour itself belongs to the region too (a thin lasso still marks its outline)
    inside = _foreground(plane)  # sorted by (u, v), so the voxels come sorted by (i, j, k) as the slice is fixed
    filled = np.zeros((len(inside), 3), np.int64)
    filled[:, u], filled[:, v], filled[:, axis] = inside[:, 0], inside[:, 1], points[0, axis]
    prompt = Prompt("lasso", bool(positive), filled)
    prompt.check(shape)
    return prompt


def _foreground(mask: np.ndarray) -> np.ndarray:
    """``np.argwhere(mask)`` (same voxels, same order), searched only inside the mask's bounding box."""
    if not mask.any():
        return np.zeros((0, mask.ndim), np.int64)
    lo, hi = mask_extent(mask)
    return np.argwhere(mask[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))]) + lo


def deepgrow_prompts(params: dict[str, Any], shape: Sequence[int]) -> list[Prompt]:
    """AIAA deepgrow params (``foreground``, ``background`` lists or their JSON text) as point prompts."""
    prompts = []
    for key, positive in (("foreground", True), ("background", False)):
        raw = params.get(key)
        if raw in (None, "", []):
            continue
        points = P.parse_points(raw, shape, minimum=1)
        prompts.append(Prompt("point", positive, np.rint(points).astype(np.int64)))
    if not prompts:
        raise InvalidPointsError("deepgrow needs at least one click: 'foreground' and 'background' are both empty")
    return prompts


def deepgrow_reply(result: StepResult) -> dict[str, Any]:
    """Reply params of AIAA deepgrow: ``crop`` (the changed box per axis, end exclusive) and ``points``."""
    crop = [[int(a), int(b)] for a, b in zip(result.lo, result.hi)]
    inside = result.mask[tuple(slice(a, b) for a, b in crop)]  # a stateless call changes nothing outside
    points = P.extreme_points(inside) + result.lo if inside.any() else np.zeros((0, 3))
    return {"crop": crop, "points": P.round_points(points), "zooms": int(result.zooms)}
