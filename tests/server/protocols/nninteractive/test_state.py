"""One lease's interaction loop: queued prompts, exact undo, initial masks, nothing changed on errors."""

from __future__ import annotations

import numpy as np
import pytest
from nnint_standin import MODEL, counted_engine, image_4d

from engines.data.io import Geometry, Volume
from engines.errors import InvalidInputError, InvalidPointsError
from engines.tasks.interactive import point_prompt
from server.protocols.nninteractive.state import LeaseState, NoImageError, clip_box, mask_prompt
from server.sessions.store import SessionStore

SHAPE = (40, 48, 32)


@pytest.fixture()
def lease():
    engine = counted_engine()
    sessions = SessionStore(3600, 3600, 64 * 1024 * 1024)
    session = sessions.create(Volume(image_4d()[0], Geometry((0.8, 0.9, 1.5), (0, 0, 0), Geometry.identity().direction)),
                              ".nninteractive", "test")
    session.prepared = engine.prepare(session.volume)
    state = LeaseState()
    state.set_image(session, MODEL)
    state.set_target_buffer(SHAPE, np.dtype(np.uint8))

    def step(prompts, mask):
        return engine.step(session.prepared, prompts, mask)

    return state, engine, step, session


def test_nothing_before_an_image():
    state = LeaseState()
    with pytest.raises(NoImageError):
        state.add(point_prompt([1, 2, 3], True, SHAPE), True, None)
    with pytest.raises(NoImageError):
        state.set_target_buffer((4, 4, 4), np.dtype(np.uint8))
    assert state.undo().ran is False


def test_the_object_lives_on_the_session_and_counts_in_its_memory(lease):
    state, _, step, session = lease
    before = session.nbytes()
    state.add(point_prompt([18, 25, 15], True, SHAPE), True, step)
    assert session.interaction.model == MODEL and session.interaction.state is state.interaction
    assert session.nbytes() > before


def test_queued_prompts_predict_once_and_undo_one_by_one(lease):
    state, engine, step, _ = lease
    assert state.add(point_prompt([18, 25, 15], True, SHAPE), False, step).ran is False
    assert state.add(point_prompt([12, 25, 15], False, SHAPE), False, step).ran is False
    assert engine.steps == 0 and len(state.pending) == 2
    reply = state.predict(step)
    assert reply.ran and reply.box is not None and engine.steps >= 1
    assert state.interaction.steps == 2 and len(state.interaction.prompts) == 2
    lo, hi = reply.box
    np.testing.assert_array_equal(reply.region, state.interaction.mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]])
    after = state.interaction.mask
    undone = state.undo()  # the last prompt: back to the mask before the prediction (none)
    assert undone.ran and state.interaction.mask is not None and not state.interaction.mask.any()
    lo, hi = undone.box
    assert after[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].sum() == after.sum() and not undone.region.any()
    assert state.undo().ran and state.interaction.mask is None and state.undo().ran is False


def test_a_failed_prediction_changes_nothing(lease):
    state, _, step, _ = lease
    state.add(point_prompt([18, 25, 15], True, SHAPE), True, step)
    state.add(point_prompt([20, 25, 15], True, SHAPE), False, step)
    before = (state.interaction.prompts, state.interaction.mask.tobytes(), list(state.pending))

    def broken(prompts, mask):
        raise RuntimeError("network failed")

    with pytest.raises(RuntimeError):
        state.add(point_prompt([19, 25, 15], True, SHAPE), True, broken)
    with pytest.raises(InvalidPointsError):
        clip_box([[0, 5], [0, 5], [3, 3]], SHAPE)
    with pytest.raises(InvalidPointsError):
        mask_prompt("scribble", np.zeros((2, 2, 1), np.uint8), True, SHAPE, (3, 3, 3))
    with pytest.raises(InvalidInputError):
        state.initial_seg(np.zeros((3, 3, 3), np.uint8), True, step)
    assert (state.interaction.prompts, state.interaction.mask.tobytes(), list(state.pending)) == before


def test_boxes_clip_to_the_volume_like_nninteractive():
    assert clip_box([[-5, 10], [30, 60], [4, 5]], SHAPE) == ([0, 30, 4], [9, 47, 4])  # inclusive corners
    with pytest.raises(InvalidPointsError):
        clip_box([[40, 45], [0, 5], [0, 1]], SHAPE)


def test_a_scribble_over_a_box_lands_at_the_boxs_place():
    scribble = np.zeros((3, 2, 1), np.uint8)
    scribble[1, 1, 0] = 1
    assert mask_prompt("scribble", scribble, False, SHAPE, (10, 20, 5)).voxels.tolist() == [[11, 21, 5]]


def test_an_initial_mask_is_kept_or_refined(lease):
    state, engine, step, _ = lease
    seg = np.zeros(SHAPE, np.uint8)
    seg[15:22, 22:29, 12:18] = 1
    assert state.initial_seg(seg, False, step).ran is False and engine.steps == 0
    np.testing.assert_array_equal(state.interaction.mask, seg > 0)
    reply = state.initial_seg(seg, True, step)
    assert reply.ran and reply.box is not None and engine.steps >= 1
    assert state.interaction.prompts[-1].kind == "mask"
    state.reset()
    assert state.interaction.mask is None and state.interaction.steps == 0 and state.target is not None
