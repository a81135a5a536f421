"""One lease's target buffer and interaction loop, as nnInteractive's session behaves (no HTTP).

The image lives in an AIAA session of the shared :class:`~server.sessions.store.SessionStore` (one
memory budget for every door; its normalised copy and the object's mask and undo stack count there).
Prompts map onto the shared contract through the engine's constructors: a bbox becomes a ``box``
prompt, a point a ``point``, a scribble the voxels of its mask, a lasso its filled voxels, an initial
segmentation :meth:`~engines.tasks.interaction.InteractionState.set_mask`. Prompts added with
``run_prediction=False`` wait in :attr:`LeaseState.pending` until the next prediction, as nnInteractive
queues them. Every method checks its input before it changes anything; a prediction is computed first
and committed only when it succeeded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from engines.errors import InvalidInputError, InvalidPointsError
from engines.tasks.interaction import InteractionState, StepResult
from engines.tasks.interactive import voxel_prompt
from engines.transforms.prompts import Prompt
from server.errors import Conflict
from server.sessions.interaction import Interaction, changed_box, changed_in_crop
from server.sessions.store import Session

__all__ = ["LeaseState", "NoImageError", "Reply", "Step", "clip_box", "mask_prompt"]

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


def clip_box(bbox: Sequence[Sequence[float]], shape: Sequence[int]) -> tuple[list[int], list[int]]:
    """nnInteractive's ``[[x0, x1], [y0, y1], [z0, z1]]`` (upper bounds exclusive) clipped to the volume.

    Returns the inclusive corners. A box with an empty axis or wholly outside the volume is refused.
    """
    if len(bbox) != 3 or any(len(axis) != 2 for axis in bbox):
        raise InvalidPointsError(f"bbox_coords must be [[x0, x1], [y0, y1], [z0, z1]], got {bbox}")
    lo = [round(float(a)) for a, _ in bbox]
    hi = [round(float(b)) for _, b in bbox]
    if any(b <= a for a, b in zip(lo, hi)):
        raise InvalidPointsError(f"bounding box {bbox} is empty in at least one axis (upper bounds are exclusive)")
    lo = [max(0, a) for a in lo]
    hi = [min(int(s), b) for b, s in zip(hi, shape)]
    if any(b <= a for a, b in zip(lo, hi)):
        raise InvalidPointsError(f"bounding box {bbox} lies outside the volume {list(shape)}")
    return lo, [b - 1 for b in hi]


def mask_prompt(kind: str, mask: np.ndarray, positive: bool, shape: Sequence[int],
                offset: Sequence[int] = (0, 0, 0)) -> Prompt:
    """A scribble, (filled) lasso or mask prompt from a 0/1 array placed at ``offset`` in the volume."""
    if mask.shape != tuple(shape):
        full = np.zeros(tuple(shape), bool)
        full[tuple(slice(o, o + s) for o, s in zip(offset, mask.shape))] = mask > 0
        mask = full
    return voxel_prompt(kind, mask > 0, positive, shape)


def _unchanged(mask: np.ndarray | None, shape: tuple[int, int, int]) -> StepResult:
    """The step of a prompt that was queued without a prediction: the mask stays as it was."""
    current = np.zeros(shape, bool) if mask is None else mask
    return StepResult(current, np.zeros(3, np.int64), np.zeros(3, np.int64))


@dataclass
class LeaseState:
    """The server side of one ``nnInteractiveRemoteInferenceSession``."""

    session: Session | None = None  # the AIAA session holding the image, its normalised copy and the object
    target: tuple[tuple[int, ...], np.dtype] | None = None
    pending: list[Prompt] = field(default_factory=list)
    do_autozoom: bool = True

    @property
    def shape(self) -> tuple[int, int, int] | None:
        """The image's voxel grid, or None before ``set_image``."""
        return None if self.session is None else tuple(int(s) for s in self.session.volume.shape)

    @property
    def interaction(self) -> InteractionState | None:
        """The object's prompts, mask and undo stack, or None before ``set_image``."""
        if self.session is None or self.session.interaction is None:
            return None
        return self.session.interaction.state

    def set_image(self, session: Session, model: str) -> None:
        """A new image: everything of the last one is dropped, the target buffer too (as nnInteractive does)."""
        session.interaction = Interaction(model, InteractionState(tuple(int(s) for s in session.volume.shape)))
        self.session, self.target, self.pending = session, None, []

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

    def _reply(self, mask: np.ndarray | None, lo: Sequence[int], hi: Sequence[int]) -> Reply:
        box = (tuple(int(v) for v in lo), tuple(int(v) for v in hi))
        if self.target is None or any(b <= a for a, b in zip(*box)):
            return Reply(True)
        sl = tuple(slice(a, b) for a, b in zip(*box))
        region = np.zeros(tuple(b - a for a, b in zip(*box)), bool) if mask is None else mask[sl]
        return Reply(True, box, region.astype(self.target[1]))

    def _commit(self, queued: Sequence[Prompt], result: StepResult, before: np.ndarray | None) -> Reply:
        """Store a prediction made from ``queued``; reply with the box where it differs from ``before``,
        the mask the client holds (a step changes nothing outside its crop)."""
        state = self.require_image()
        for prompt in queued[:-1]:
            state.apply(prompt, lambda prompts, mask: _unchanged(mask, self.shape))
        state.apply(queued[-1], lambda prompts, mask: result)
        self.pending = []
        return self._reply(result.mask, *changed_in_crop(before, result.mask, result.lo, result.hi))

    def add(self, prompt: Prompt, run_prediction: bool, step: Step) -> Reply:
        """Add a prompt; predict now (with every queued prompt) or queue it for :meth:`predict`."""
        state = self.require_image()
        prompt.check(self.shape)
        if not run_prediction:
            self.pending.append(prompt)
            return Reply(False)
        queued = [*self.pending, prompt]
        result = step(state.prompts + tuple(queued), state.mask)
        return self._commit(queued, result, state.mask)

    def predict(self, step: Step) -> Reply:
        """Predict from the queued prompts; nothing runs (``ran`` false) when none is queued."""
        state = self.require_image()
        if not self.pending:
            return Reply(False)
        result = step(state.prompts + tuple(self.pending), state.mask)
        return self._commit(list(self.pending), result, state.mask)

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
        return self._reply(after, *changed_box(before, after, self.shape))

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
        refine = voxel_prompt("mask", mask, True, self.shape)
        result = step(state.prompts + (refine,), mask)
        state.set_mask(mask)
        self.pending = []
        return self._commit([refine], result, mask)  # the client holds the initial mask already
