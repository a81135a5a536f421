"""One lease's interaction loop: queued prompts, exact undo, initial masks, nothing changed on errors."""

from __future__ import annotations

import numpy as np
import pytest
from nnint_standin import StandInInteractive, image_4d

from engines.data.io import Geometry, Volume
from engines.errors import InvalidInputError, InvalidPointsError
from server.protocols.nninteractive.state import LeaseState, NoImageError, box_prompt, point_prompt


@pytest.fixture()
def lease():
    engine = StandInInteractive()
    image = image_4d()[0]
    state = LeaseState()
    state.set_image(engine, engine.prepare(Volume(image, Geometry((0.8, 0.9, 1.5), (0, 0, 0), Geometry.identity().direction))),
                    image.shape, image.size * 4)
    state.set_target_buffer(image.shape, np.dtype(np.uint8))

    def step(prompts, mask):
        return engine.step(state.image, prompts, mask)

    return state, engine, step


def test_nothing_before_an_image():
    state = LeaseState()
    with pytest.raises(NoImageError):
        state.add(point_prompt([1, 2, 3], True), True, None)
    with pytest.raises(NoImageError):
        state.set_target_buffer((4, 4, 4), np.dtype(np.uint8))
    assert state.undo().ran is False


def test_queued_prompts_predict_once_and_undo_one_by_one(lease):
    state, engine, step = lease
    assert state.add(point_prompt([18, 25, 15], True), False, step).ran is False
    assert state.add(point_prompt([12, 25, 15], False), False, step).ran is False
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
    state, _, step = lease
    state.add(point_prompt([18, 25, 15], True), True, step)
    state.add(point_prompt([20, 25, 15], True), False, step)
    before = (state.interaction.prompts, state.interaction.mask.tobytes(), list(state.pending))

    def broken(prompts, mask):
        raise RuntimeError("network failed")

    with pytest.raises(RuntimeError):
        state.add(point_prompt([19, 25, 15], True), True, broken)
    with pytest.raises(InvalidPointsError):
        state.add(point_prompt([99, 25, 15], True), True, step)
    with pytest.raises(InvalidPointsError):
        box_prompt([[0, 5], [0, 5], [3, 3]], True, state.shape)
    with pytest.raises(InvalidInputError):
        state.initial_seg(np.zeros((3, 3, 3), np.uint8), True, step)
    assert (state.interaction.prompts, state.interaction.mask.tobytes(), list(state.pending)) == before


def test_boxes_clip_to_the_volume_like_nninteractive(lease):
    state, _, _ = lease
    assert box_prompt([[-5, 10], [30, 60], [4, 5]], True, state.shape).box == ((0, 30, 4), (10, 48, 5))


def test_an_initial_mask_is_kept_or_refined(lease):
    state, engine, step = lease
    seg = np.zeros(state.shape, np.uint8)
    seg[15:22, 22:29, 12:18] = 1
    assert state.initial_seg(seg, False, step).ran is False and engine.steps == 0
    np.testing.assert_array_equal(state.interaction.mask, seg > 0)
    reply = state.initial_seg(seg, True, step)
    assert reply.ran and reply.box is not None and engine.steps >= 1
    assert state.interaction.prompts[-1].kind == "mask"
    state.reset()
    assert state.interaction.mask is None and state.interaction.steps == 0 and state.target is not None
