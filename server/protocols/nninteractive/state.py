"""One lease's image, target buffer and interaction loop, as nnInteractive's session behaves (no HTTP).

Prompts map onto the shared contract (:mod:`engines.transforms.prompts`): a bbox becomes a ``box``
prompt, a point a ``point``, a scribble the voxels of its mask, a lasso its filled voxels, an initial
segmentation :meth:`~engines.tasks.interaction.InteractionState.set_mask`. Prompts added with
``run_prediction=False`` wait in :attr:`LeaseState.pending` until the next prediction, as nnInteractive
queues them. Every method checks its input before it changes anything, so a refused call leaves the
lease as it was; a prediction is computed first and committed only when it succeeded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engines.errors import InvalidInputError, InvalidPointsError
from engines.tasks.interaction import InteractionState, StepResult
from engines.transforms.prompts import Prompt
from server.errors import Conflict

__all__ = ["LeaseState", "NoImageError", "Reply", "Step", "box_prompt", "mask_prompt", "point_prompt"]

Step = Callable[[Sequence[Prompt], "np.ndarray | None"], StepResult]
Box = tuple[tuple[int, int, int], tuple[int, int, int]]


class NoImageError(Conflict):
    """An interaction or a target buffer arrived before ``set_image`` (409)."""


@dataclass
class Reply:
    """What a call did: whether a prediction or undo ran, and the target-buffer box it changed."""

    ran: bool
    box: Box | None = None
    region: np.ndarray | None = None


def point_prompt(coordinates: Sequence[float], positive: bool) -> Prompt:
    """A click at ``[x, y, z]`` (rounded to the nearest voxel, as nnInteractive does)."""
    if len(coordinates) != 3:
        raise InvalidPointsError(f"a point needs 3 coordinates, got {len(coordinates)}")
    return Prompt("point", positive, voxels=np.array([[round(float(c)) for c in coordinates]], np.int64))


def box_prompt(bbox: Sequence[Sequence[float]], positive: bool, shape: Sequence[int]) -> Prompt:
    """A box ``[[x0, x1], [y0, y1], [z0, z1]]`` (upper bounds exclusive), clipped to the volume.

    A box with an empty axis or lying wholly outside the volume is refused.
    """
    if len(bbox) != 3 or any(len(axis) != 2 for axis in bbox):
        raise InvalidPointsError(f"bbox_coords must be [[x0, x1], [y0, y1], [z0, z1]], got {bbox}")
    lo = [round(float(a)) for a, _ in bbox]
    hi = [round(float(b)) for _, b in bbox]
    if any(b <= a for a, b in zip(lo, hi)):
        raise InvalidPointsError(f"bounding box {bbox} is empty in at least one axis (upper bounds are exclusive)")
    clipped_lo = [max(0, a) for a in lo]
    clipped_hi = [min(int(s), b) for b, s in zip(hi, shape)]
    if any(b <= a for a, b in zip(clipped_lo, clipped_hi)):
        raise InvalidPointsError(f"bounding box {bbox} lies outside the volume {list(shape)}")
    return Prompt("box", positive, box=(tuple(clipped_lo), tuple(clipped_hi)))


def mask_prompt(kind: str, mask: np.ndarray, positive: bool, offset: Sequence[int] = (0, 0, 0)) -> Prompt:
    """A scribble or (filled) lasso: the voxels of ``mask``, placed at ``offset`` in the volume."""
    voxels = np.argwhere(mask) + np.asarray(offset, np.int64)
    return Prompt(kind, positive, voxels=voxels)


def _unchanged(prompts: Sequence[Prompt], mask: np.ndarray | None, shape: Sequence[int]) -> StepResult:
    """The step of a prompt that was queued without a prediction: the mask stays as it was."""
    current = np.zeros(tuple(shape), bool) if mask is None else mask
    return StepResult(current, np.zeros(3, np.int64), np.zeros(3, np.int64))


def _changed_box(before: np.ndarray | None, after: np.ndarray | None) -> Box | None:
    if before is None and after is None:
        return None
    diff = (before if before is not None else False) != (after if after is not None else False)
    if not diff.any():
        return None
    lo, hi = [], []
    for axis in range(3):
        hit = np.flatnonzero(diff.any(axis=tuple(a for a in range(3) if a != axis)))
        lo.append(int(hit[0]))
        hi.append(int(hit[-1]) + 1)
    return tuple(lo), tuple(hi)


@dataclass
class LeaseState:
    """The server side of one ``nnInteractiveRemoteInferenceSession``."""

    image: Any = None  # the engine's PreparedImage
    engine: Any = None  # the engine that prepared it (steps use the same one)
    shape: tuple[int, int, int] | None = None
    image_nbytes: int = 0
    target: tuple[tuple[int, ...], np.dtype] | None = None
    interaction: InteractionState | None = None
    pending: list[Prompt] = field(default_factory=list)
    do_autozoom: bool = True

    def nbytes(self) -> int:
        """Memory held: the prepared image, the mask and its undo stack."""
        return self.image_nbytes + (self.interaction.nbytes() if self.interaction is not None else 0)

    def set_image(self, engine: Any, image: Any, shape: Sequence[int], nbytes: int) -> None:
        """A new image: everything of the last one is dropped, the target buffer too (as nnInteractive does)."""
        self.engine, self.image, self.shape, self.image_nbytes = engine, image, tuple(int(s) for s in shape), nbytes
        self.target = None
        self.interaction = InteractionState(self.shape)
        self.pending = []

    def require_image(self) -> InteractionState:
        """The interaction state; :class:`NoImageError` (409) before ``set_image``."""
        if self.interaction is None:
            raise NoImageError("no image on this lease yet: call set_image first")
        return self.interaction

    def set_target_buffer(self, shape: Sequence[int], dtype: np.dtype) -> None:
        """The client's mask buffer: the image's spatial shape, bool or numeric."""
        self.require_image()
        if tuple(shape) != self.shape:
            raise InvalidInputError(f"target buffer shape {list(shape)} differs from the image's {list(self.shape)}")
        self.target = (tuple(shape), dtype)

    def reset(self) -> None:
        """A new object: prompts, mask and undo stack go."""
        if self.interaction is not None:
            self.interaction.reset()
        self.pending = []

    def _reply(self, mask: np.ndarray | None, box: Box | None) -> Reply:
        if box is None or self.target is None:
            return Reply(True)
        sl = tuple(slice(a, b) for a, b in zip(*box))
        region = np.zeros(tuple(b - a for a, b in zip(*box)), bool) if mask is None else mask[sl]
        return Reply(True, box, region.astype(self.target[1]))

    def _commit(self, queued: Sequence[Prompt], result: StepResult) -> Reply:
        state = self.require_image()
        for prompt in queued[:-1]:
            state.apply(prompt, lambda prompts, mask: _unchanged(prompts, mask, self.shape))
        state.apply(queued[-1], lambda prompts, mask: result)
        self.pending = []
        box = (tuple(int(v) for v in result.lo), tuple(int(v) for v in result.hi))
        return self._reply(result.mask, box if all(b > a for a, b in zip(*box)) else None)

    def add(self, prompt: Prompt, run_prediction: bool, step: Step) -> Reply:
        """Add a prompt; predict now (with every queued prompt) or queue it for :meth:`predict`."""
        state = self.require_image()
        prompt.check(self.shape)
        if not run_prediction:
            self.pending.append(prompt)
            return Reply(False)
        queued = [*self.pending, prompt]
        result = step(state.prompts + tuple(queued), state.mask)
        return self._commit(queued, result)

    def predict(self, step: Step) -> Reply:
        """Predict from the queued prompts; nothing runs (``ran`` false) when none is queued."""
        state = self.require_image()
        if not self.pending:
            return Reply(False)
        result = step(state.prompts + tuple(self.pending), state.mask)
        return self._commit(list(self.pending), result)

    def undo(self) -> Reply:
        """Take back the last prompt (queued or predicted), exactly; ``ran`` false when there is nothing to undo."""
        if self.interaction is None:
            return Reply(False)
        if self.pending:
            self.pending.pop()
            return Reply(True)
        if self.interaction.steps == 0:
            return Reply(False)
        before = self.interaction.mask
        self.interaction.undo()
        after = self.interaction.mask
        return self._reply(after, _changed_box(before, after))

    def initial_seg(self, seg: np.ndarray, run_prediction: bool, step: Step) -> Reply:
        """Start from a mask (queued prompts are dropped); with ``run_prediction`` the model refines it.

        Without a prediction nothing is sent back: the client has already copied the mask into its buffer.
        """
        state = self.require_image()
        if seg.shape != self.shape:
            raise InvalidInputError(f"initial segmentation shape {list(seg.shape)} differs from the image's "
                                    f"{list(self.shape)}")
        mask = seg > 0
        if not run_prediction:
            state.set_mask(mask)
            self.pending = []
            return Reply(False)
        refine = mask_prompt("mask", mask, True)
        result = step(state.prompts + (refine,), mask)
        state.set_mask(mask)
        self.pending = []
        return self._commit([refine], result)
