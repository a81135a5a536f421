"""The interaction loop: crop-predict-paste with zoom-out, and exact undo."""

import numpy as np
import pytest

from engines.errors import InvalidInputError, InvalidPointsError
from engines.tasks.interaction import InteractionState, keep_click_change, network_callable, predict_step
from engines.transforms.prompts import Prompt, normalise_volume


def bright_network(x: np.ndarray) -> np.ndarray:
    """Stand-in network: the object is whatever is bright."""
    return np.where(x[0] > 0.5, 4.0, -4.0)


def sphere_volume(shape=(64, 64, 12), centre=(32, 32, 6), radius=20.0):
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    obj = (((grid - centre) * [1, 1, 4]) ** 2).sum(-1) <= radius ** 2
    return normalise_volume(obj.astype(np.float32) * 100), obj


def dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_zoom_out_brings_a_large_object_out_whole_on_a_thin_stack():
    image, obj = sphere_volume()
    click = [Prompt("point", voxels=np.array([[32, 32, 6]]))]
    once = predict_step(bright_network, image, (1, 1, 4), click, None, (16, 16, 16), min_size_mm=10, max_zooms=0)
    zoomed = predict_step(bright_network, image, (1, 1, 4), click, None, (16, 16, 16), min_size_mm=10, max_zooms=4)
    assert zoomed.zooms > 0 and dice(zoomed.mask, obj) > dice(once.mask, obj) and dice(zoomed.mask, obj) > 0.9


def test_only_the_crop_goes_through_the_network():
    image, obj = sphere_volume()
    seen = []

    def network(x):
        seen.append(x.shape)
        return np.full(x.shape[1:], -4.0)

    out = predict_step(network, image, (1, 1, 4), [Prompt("box", box=((30, 30, 5), (34, 34, 6)))], None,
                       (16, 16, 16), min_size_mm=8, max_zooms=0)
    assert seen == [(5, 16, 16, 16)] and not out.mask.any() and (out.hi - out.lo < obj.shape).all()


def test_a_click_keeps_only_the_change_connected_to_it():
    before = np.zeros((20, 20, 20), bool)
    before[2:6, 2:6, 2:6] = True  # a part the annotator accepted
    before[10:14, 10:14, 10:14] = True
    after = np.zeros_like(before)
    after[10:18, 10:14, 10:14] = True  # grown where clicked, the first part dropped
    kept = keep_click_change(before, after, np.array([[16, 12, 12]]))
    assert kept[2:6, 2:6, 2:6].all() and kept[10:18, 10:14, 10:14].all() and kept.sum() == 4 ** 3 + 8 * 16
    # a click whose voxel the prediction left alone takes the whole prediction, not nothing
    assert (keep_click_change(before, after, np.array([[0, 0, 0]])) == after).all()


def test_local_corrections_leave_the_rest_of_the_mask_as_it_was():
    image, obj = sphere_volume()
    accepted = np.zeros(obj.shape, bool)
    accepted[2:8, 30:34, 5:7] = True  # outside the bright sphere: the stand-in network would erase it
    click = Prompt("point", voxels=np.array([[40, 32, 6]]))
    kwargs = {"min_size_mm": 10, "max_zooms": 0}
    plain = predict_step(bright_network, image, (1, 1, 4), [click], accepted, (16, 16, 16), **kwargs)
    local = predict_step(bright_network, image, (1, 1, 4), [click], accepted, (16, 16, 16), local_corrections=True,
                         **kwargs)
    assert not plain.mask[2:8, 30:34, 5:7].any() and local.mask[2:8, 30:34, 5:7].all()
    assert local.mask[40, 32, 6] and (local.mask & obj).sum() == (plain.mask & obj).sum()


def test_undo_is_exact_and_errors_change_nothing():
    image, obj = sphere_volume()
    state = InteractionState(obj.shape)

    def predict(prompts, mask):
        return predict_step(bright_network, image, (1, 1, 4), prompts, mask, (16, 16, 16))

    state.apply(Prompt("point", voxels=np.array([[32, 32, 6]])), predict)
    first = state.mask.copy()
    state.apply(Prompt("point", False, np.array([[32, 32, 6]])), predict)
    with pytest.raises(InvalidPointsError):
        state.apply(Prompt("point", voxels=np.array([[99, 0, 0]])), predict)
    assert state.steps == 2 and len(state.prompts) == 2
    state.undo()
    assert (state.mask == first).all() and len(state.prompts) == 1
    state.undo()
    assert state.mask is None and state.prompts == ()
    with pytest.raises(InvalidInputError):
        state.undo()
    state.set_mask(obj)
    assert (state.mask == obj).all() and not state.mask.flags.writeable
    one = state.nbytes()
    state.set_mask(obj)  # each undo step is kept packed: one bit per voxel
    assert state.nbytes() - one <= obj.size // 8 + 64
    state.reset()
    assert state.mask is None and state.steps == 0


def test_a_module_run_under_bf16_autocast_gives_float32_logits_close_to_fp32():
    import torch

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv3d(5, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(8, 1, 1)).eval()
    x = np.random.default_rng(0).normal(size=(5, 16, 16, 8)).astype(np.float32)
    plain, bf16 = network_callable(module)(x), network_callable(module, "cpu", torch.bfloat16)(x)
    assert plain.shape == bf16.shape == (16, 16, 8) and bf16.dtype == np.float32
    assert not np.array_equal(plain, bf16)  # it did compute in bfloat16 ...
    assert np.abs(plain - bf16).max() < 0.05 * np.abs(plain).max()  # ... to bfloat16's precision
