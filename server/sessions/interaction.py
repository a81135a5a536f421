"""Interactive annotation on sessions: one object per session, its prompts, mask and exact undo.

Every door (AIAA deepgrow, our own interactive API, nnInteractive's protocol) goes through
:class:`Interactions`. The session's volume is normalised once (:attr:`Session.prepared`);
building a prompt and preparing the image run in worker threads outside the model's gate;
only the step (crop, encode, network, paste back) runs through :class:`server.admission.GateKeeper`.
A failing request changes nothing: prompts are checked before the step, a new object replaces
the old one only once its first step succeeded, and memory is made room for before anything grows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from anyio import to_thread

from engines.data.io import Volume
from engines.errors import InvalidInputError, WrongModelTypeError
from engines.serving.pool import EnginePool
from engines.tasks.base import InferenceResult, Timer
from engines.tasks.interaction import InteractionState
from engines.tasks.interactive import InteractiveEngine, PreparedImage, deepgrow_prompts, deepgrow_reply
from engines.transforms.prompts import Prompt, mask_extent
from server.admission import GateKeeper, ModelGate
from server.errors import Conflict, NotFound, SessionExpired
from server.sessions.store import Session, SessionStore

__all__ = ["Change", "Interaction", "Interactions", "changed_box", "changed_in_crop"]

PromptBuilder = Callable[[tuple[int, int, int]], Prompt]


@dataclass
class Interaction:
    """The one object a session annotates: the model it is bound to and its interaction state."""

    model: str
    state: InteractionState

    def nbytes(self) -> int:
        """Memory of the mask, prompts and undo stack."""
        return self.state.nbytes()


@dataclass
class Change:
    """What one request did to the object: the mask now, the box ``[lo, hi)`` where it may differ, timings."""

    model: str
    steps: int
    prompts: int
    mask: np.ndarray  # bool, full volume (all False when the object has no mask)
    lo: np.ndarray
    hi: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def voxels(self) -> int:
        """Foreground voxels of the whole mask."""
        return int(np.count_nonzero(self.mask))


def changed_box(before: np.ndarray | None, after: np.ndarray | None, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Bounding box ``[lo, hi)`` of the voxels that differ (an empty box at the origin when none do)."""
    if before is None and after is None:
        return np.zeros(3, np.int64), np.zeros(3, np.int64)
    diff = (before if after is None else after) if before is None or after is None else before != after
    if not diff.any():
        return np.zeros(3, np.int64), np.zeros(3, np.int64)
    return mask_extent(diff)


class Interactions:
    """Interactive objects on the sessions of a :class:`SessionStore`, served by the pool's interactive models."""

    def __init__(self, sessions: SessionStore, pool: EnginePool, gates: GateKeeper) -> None:
        self.sessions = sessions
        self.pool = pool
        self.gates = gates

    # lookups -------------------------------------------------------------------------------------

    def session(self, session_id: str) -> Session:
        """The live session (touched).

        Raises:
            SessionExpired: unknown or expired (AIAA's 440).
        """
        session = self.sessions.get(session_id)
        if session is None:
            raise SessionExpired(f"session '{session_id}' not found or expired; create a new one with PUT /session/")
        return session

    def engine(self, model: str) -> InteractiveEngine:
        """The interactive engine ``model``.

        Raises:
            ModelNotFoundError: no such model. WrongModelTypeError: not an interactive (deepgrow) model.
        """
        engine = self.pool.get(model)
        if not isinstance(engine, InteractiveEngine):
            raise WrongModelTypeError(f"model '{model}' is a {engine.type} model; interaction needs a deepgrow "
                                      f"(interactive) model: GET /v1/models?type=deepgrow lists them")
        return engine

    async def prepared(self, session: Session, engine: InteractiveEngine, timings: dict[str, float]) -> PreparedImage:
        """The session's volume as ``engine`` takes it, normalised at most once per session and normalisation."""
        if session.prepared is not None and session.prepared_key == engine.prepare_key:
            return session.prepared
        start = time.perf_counter()
        extra = 4 * int(np.prod(session.volume.shape[:3]))  # float32 copy
        self.sessions.make_room(session, extra - (session.prepared.nbytes if session.prepared is not None else 0))
        prepared = await to_thread.run_sync(engine.prepare, session.volume)
        session.prepared, session.prepared_key = prepared, engine.prepare_key
        timings["prepare"] = _ms(start)
        return prepared

    # the interaction loop ------------------------------------------------------------------------

    async def prompt(self, session_id: str, model: str, build: PromptBuilder) -> Change:
        """Add a prompt to the session's object and predict. A different ``model`` starts a new object."""
        session, engine = self.session(session_id), self.engine(model)
        timer = Timer()
        async with session.lock:
            start = time.perf_counter()
            shape = _shape(session.volume)
            prompt = await to_thread.run_sync(build, shape)
            timer.timings["build"] = _ms(start)
            prepared = await self.prepared(session, engine, timer.timings)
            target = self._target(session, model, shape)
            self.sessions.make_room(session, _packed_bytes(shape) if target is session.interaction else
                                    target.nbytes() + _packed_bytes(shape))
            before = target.state.mask

            def predict(prompts, mask):
                return engine.step(prepared, prompts, mask, timer)

            result = await self.gates.for_engine(engine).run(target.state.apply, prompt, predict)
            session.interaction = target
            start = time.perf_counter()
            lo, hi = changed_in_crop(before, result.mask, result.lo, result.hi)
            timer.timings["diff"] = _ms(start)
            return Change(model, target.state.steps, len(target.state.prompts), result.mask, lo, hi, timer.timings)

    async def set_mask(self, session_id: str, model: str | None, load: Callable[[Volume], np.ndarray]) -> Change:
        """Start from an existing mask (``load`` decodes it onto the session's grid); undoable."""
        session = self.session(session_id)
        async with session.lock:
            model = self._model_or_bound(session, model)
            self.engine(model)
            shape = _shape(session.volume)
            start = time.perf_counter()
            mask = await to_thread.run_sync(load, session.volume)
            if mask.shape != shape:
                raise InvalidInputError(f"the mask has shape {list(mask.shape)}; the session's image has {list(shape)}")
            timings = {"decode": _ms(start)}
            target = self._target(session, model, shape)
            self.sessions.make_room(session, _packed_bytes(shape) + (0 if target is session.interaction
                                                                     else target.nbytes()))
            before = target.state.mask
            target.state.set_mask(mask.astype(bool))
            session.interaction = target
            lo, hi = changed_box(before, target.state.mask, shape)
            return Change(model, target.state.steps, len(target.state.prompts), mask.astype(bool), lo, hi, timings)

    async def undo(self, session_id: str) -> Change:
        """Go back one step exactly.

        Raises:
            Conflict: nothing to undo (409).
        """
        session = self.session(session_id)
        async with session.lock:
            interaction = session.interaction
            if interaction is None or interaction.state.steps == 0:
                raise Conflict("nothing to undo: the object has no step yet")
            shape = _shape(session.volume)
            start = time.perf_counter()
            before = interaction.state.mask
            interaction.state.undo()
            after = interaction.state.mask
            lo, hi = changed_box(before, after, shape)
            mask = np.zeros(shape, bool) if after is None else after
            return Change(interaction.model, interaction.state.steps, len(interaction.state.prompts), mask, lo, hi,
                          {"undo": _ms(start)})

    async def reset(self, session_id: str) -> dict[str, Any]:
        """Forget the object: prompts, mask and undo stack (the normalised image stays with the session)."""
        session = self.session(session_id)
        async with session.lock:
            session.interaction = None
            return self.describe(session)

    def describe(self, session: Session) -> dict[str, Any]:
        """What the session's object is: model, undoable steps, prompt count."""
        interaction = session.interaction
        return {
            "session_id": session.id,
            "shape": list(_shape(session.volume)),
            "model": interaction.model if interaction else None,
            "steps": interaction.state.steps if interaction else 0,
            "prompts": len(interaction.state.prompts) if interaction else 0,
            "has_mask": bool(interaction and interaction.state.mask is not None),
        }

    def mask(self, session_id: str) -> tuple[str, np.ndarray]:
        """The object's model and current mask.

        Raises:
            NotFound: the session has no object with a mask yet.
        """
        session = self.session(session_id)
        interaction = session.interaction
        mask = interaction.state.mask if interaction is not None else None
        if mask is None:
            raise NotFound(f"session '{session_id}' has no interactive mask yet: add a prompt or set a mask first")
        return interaction.model, mask

    # AIAA deepgrow: stateless clicks on the session's prepared image -----------------------------

    async def deepgrow(self, session: Session, engine: InteractiveEngine, params: dict[str, Any],
                       gate: ModelGate | None = None) -> InferenceResult:
        """All of a deepgrow request's clicks at once (AIAA clients resend them); the object state is untouched.

        ``gate``: the model's gate when the caller was admitted already (its running slot is used, not a new place).
        """
        timer = Timer()
        start = time.perf_counter()
        prompts = deepgrow_prompts(params, _shape(session.volume))
        timer.timings["build"] = _ms(start)
        prepared = await self.prepared(session, engine, timer.timings)
        run = gate.call if gate is not None else self.gates.for_engine(engine).run
        result = await run(engine.step, prepared, prompts, None, timer)
        timer.timings["total"] = _ms(start)
        return InferenceResult(result.mask.astype(np.uint8), deepgrow_reply(result), timer.timings)

    # helpers ---------------------------------------------------------------------------------------

    def _target(self, session: Session, model: str, shape: tuple[int, int, int]) -> Interaction:
        """The session's object when bound to ``model``, else a new one (committed only after success)."""
        if session.interaction is not None and session.interaction.model == model:
            return session.interaction
        return Interaction(model, InteractionState(shape))

    @staticmethod
    def _model_or_bound(session: Session, model: str | None) -> str:
        if model:
            return model
        if session.interaction is not None:
            return session.interaction.model
        raise InvalidInputError("no model: pass ?model= (the session has no interactive object yet)")


def _shape(volume: Volume) -> tuple[int, int, int]:
    if volume.array.ndim != 3:
        raise InvalidInputError(f"interaction needs a 3D volume; the session holds {volume.array.ndim}D "
                                f"{list(volume.shape)}")
    return tuple(int(s) for s in volume.shape)  # type: ignore[return-value]


def changed_in_crop(before: np.ndarray | None, after: np.ndarray, lo: np.ndarray,
                     hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The box of what a step changed: inside its crop ``[lo, hi)`` (predict_step pastes only there)."""
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    inner_lo, inner_hi = changed_box(None if before is None else before[box], after[box], tuple(hi - lo))
    if not (inner_hi > inner_lo).all():
        return np.zeros(3, np.int64), np.zeros(3, np.int64)
    return inner_lo + lo, inner_hi + lo


def _packed_bytes(shape: tuple[int, ...]) -> int:
    return (int(np.prod(shape)) + 7) // 8


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 2)
