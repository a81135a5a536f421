"""The interactive protocol: click rule on hand-made masks, first prompts, metrics with known answers, reports."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest

from engines.errors import InvalidInputError
from engines.evaluation.interactive import (
    StepScore,
    auc,
    centre_voxel,
    challenge_box,
    dice_nsd,
    error_click,
    extreme_points,
    first_prompt,
    largest_slice_box,
    run_protocol,
    summarise,
    write_outputs,
)


def cube(shape=(30, 30, 30), lo=(5, 5, 5), hi=(15, 15, 15)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    return mask


def test_missed_slab_gets_a_positive_click_at_its_centre_not_in_the_smaller_overflow():
    truth = cube()
    pred = truth.copy()
    pred[5:15, 5:15, 5:8] = False  # 300 missed voxels, three slices thick
    pred[20:22, 20:22, 20:22] = True  # 8 voxels of overflow
    click = error_click(pred, truth)
    assert click.kind == "point" and click.positive
    i, j, k = click.voxels[0]
    assert k == 6  # the middle of the three missed slices: farthest from the component's boundary
    assert 6 <= i <= 13 and 6 <= j <= 13  # a plateau of depth 2: the first of it in C order


def test_overflow_gets_a_negative_click_at_the_centre_of_the_largest_component():
    truth = cube()
    pred = truth.copy()
    pred[20:27, 20:27, 20:27] = True  # 343 overflowing voxels
    pred[5, 5, 5] = False  # one missed voxel
    click = error_click(pred, truth)
    assert not click.positive
    assert click.voxels[0].tolist() == [23, 23, 23]


def test_error_components_are_26_connected():
    truth = np.zeros((20, 20, 20), bool)
    pred = np.zeros_like(truth)
    # Two pieces of 3 voxels that touch only at a corner (one 26-connected component of 6) ...
    truth[2, 2, 2:5] = True
    truth[3, 3, 5:8] = True
    # ... beat a face-connected piece of 5 missed voxels.
    truth[10, 10, 2:7] = True
    click = error_click(pred, truth)
    assert tuple(click.voxels[0]) in {(2, 2, z) for z in range(2, 5)} | {(3, 3, z) for z in range(5, 8)}


def test_no_error_means_no_click_and_no_prediction_means_a_click_in_the_object():
    truth = cube()
    assert error_click(truth.copy(), truth) is None
    click = error_click(None, truth)
    assert click.positive and click.voxels[0].tolist() == centre_voxel(truth).tolist()


def test_centre_voxel_is_the_deepest_voxel_and_respects_spacing():
    region = cube(lo=(0, 0, 0), hi=(9, 9, 9))
    assert centre_voxel(region).tolist() == [4, 4, 4]
    with pytest.raises(InvalidInputError):
        centre_voxel(np.zeros((3, 3, 3), bool))


def test_first_prompts_of_the_protocol_variants():
    truth = np.zeros((30, 30, 20), bool)
    truth[10:20, 8:12, 4:12] = True
    truth[5:25, 6:16, 9] = True  # slice 9 is the largest
    box = largest_slice_box(truth)
    assert box.kind == "box" and box.box == ((5, 6, 9), (25, 16, 10))
    challenge = challenge_box(truth)  # middle slice (4 + 11) // 2 = 7, stretched over z 4..11
    assert challenge.box == ((10, 8, 4), (20, 12, 12))
    points = extreme_points(truth)
    assert points.shape == (6, 3) and truth[tuple(points.T)].all()
    assert points[:, 0].min() == 5 and points[:, 0].max() == 24 and points[:, 2].min() == 4
    click = first_prompt("clicks", truth)
    assert click.kind == "point" and truth[tuple(click.voxels[0])]
    assert first_prompt("extreme_points", truth).kind == "extreme_points"
    with pytest.raises(InvalidInputError):
        first_prompt("lasso", truth)


def test_dice_and_nsd_with_known_answers():
    truth = cube()
    assert dice_nsd(truth, truth, (1, 1, 1)) == (1.0, 1.0)
    assert dice_nsd(np.zeros_like(truth), np.zeros_like(truth), (1, 1, 1)) == (1.0, 1.0)
    assert dice_nsd(np.zeros_like(truth), truth, (1, 1, 1)) == (0.0, 0.0)
    shifted = np.roll(truth, 1, axis=0)
    dice, nsd = dice_nsd(shifted, truth, (1, 1, 1))
    assert dice == pytest.approx(0.9)  # 900 of 1000 voxels overlap
    assert nsd == pytest.approx(1.0)  # every surface point within 2 mm
    far = np.roll(truth, 12, axis=0)
    assert dice_nsd(far, truth, (1, 1, 1)) == (0.0, 0.0)
    # At 5 mm per voxel along the shift, a one-voxel shift moves the two faces across it beyond 2 mm.
    _, nsd_coarse = dice_nsd(shifted, truth, (5.0, 1.0, 1.0))
    assert nsd_coarse < 1.0


def test_auc_is_the_trapezoid_area_one_unit_per_interaction():
    assert auc([1.0] * 6) == pytest.approx(5.0)
    assert auc([0.0, 1.0, 1.0]) == pytest.approx(1.5)
    assert auc([0.5]) == 0.5


def oracle(threshold: float = 0.0):
    """A stand-in network: the object is where the normalised image channel is bright."""
    return lambda x: (x[0] - threshold) * 10.0


def phantom_volume():
    image = np.zeros((40, 40, 30), np.float32)
    truth = np.zeros(image.shape, bool)
    truth[12:28, 10:26, 8:20] = True
    image[truth] = 2.0
    return image - 1.0, truth


def test_run_protocol_gives_first_prompt_plus_clicks_and_times():
    image, truth = phantom_volume()
    ticks = iter(range(0, 1000, 1))
    steps = run_protocol(oracle(), image, (1.0, 1.0, 1.0), truth, (16, 16, 16), variant="box", n_clicks=5,
                         clock=lambda: next(ticks) / 1000)
    assert len(steps) == 6
    assert steps[0][0] == "box2d"
    assert all(s[3] >= 0 for s in steps)
    assert steps[-1][1] > 0.9  # the oracle finds the bright object
    clicks_only = run_protocol(oracle(), image, (1.0, 1.0, 1.0), truth, (16, 16, 16), variant="clicks", n_clicks=2)
    assert clicks_only[0][0] == "point" and len(clicks_only) == 3


def test_summary_csv_and_plot(tmp_path):
    rows = []
    for case, dices in (("c1", [0.5, 0.7, 0.9]), ("c2", [0.7, 0.9, 0.9])):
        rows += [StepScore("hippocampus", "head", case, "box", n, "box2d" if n == 0 else "positive_click", d, d, 10.0)
                 for n, d in enumerate(dices)]
    summary = write_outputs(rows, tmp_path)
    overall = summary["box"]["overall"]
    assert overall["objects"] == 2
    assert overall["dice_first"] == pytest.approx(0.6)
    assert overall["dice_final"] == pytest.approx(0.9)
    assert overall["dice_auc"] == pytest.approx((1.4 + 1.7) / 2)  # c1: 0.6 + 0.8, c2: 0.8 + 0.9
    assert summary["box"]["structures"]["hippocampus/head"]["nsd_final"] == pytest.approx(0.9)
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    with open(tmp_path / "interactive.csv") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 6 and set(table[0]) >= {"case", "object", "step", "prompt", "dice", "nsd", "ms"}
    assert (tmp_path / "dice_per_interaction.png").stat().st_size > 1000
    assert overall["dice_per_step"] == pytest.approx([0.6, 0.8, 0.9]) and overall["clicks_lowering_dice"] == 0.0
    assert summarise([]) == {}
    # an object that ended early keeps its last Dice in the per-step means; one click of three lowered Dice
    early = [StepScore("acdc", "lv", "e", "box", n, "x", d, d, 1.0) for n, d in enumerate([0.9, 1.0])]
    late = [StepScore("acdc", "lv", "l", "box", n, "x", d, d, 1.0) for n, d in enumerate([0.5, 0.6, 0.55])]
    lv = summarise(early + late)["box"]["structures"]["acdc/lv"]
    assert lv["dice_per_step"] == pytest.approx([0.7, 0.8, 0.775]) and lv["clicks_lowering_dice"] == pytest.approx(1 / 3, abs=1e-4)


def test_the_protocol_thresholds_logits_where_the_engine_does(tmp_path):
    from helpers import interactive_config, write_model

    from engines.evaluation.interactive import load_network
    from engines.tasks.interaction import logit_threshold

    x = np.random.default_rng(0).normal(size=(5, 32, 32, 32)).astype(np.float32)
    plain, _, _ = load_network(write_model(tmp_path, "half", interactive_config()))
    strict, config, _ = load_network(write_model(tmp_path, "strict", interactive_config(thresh=0.8)))
    assert config.thresh == 0.8 and logit_threshold(0.5) == 0.0
    np.testing.assert_allclose(strict(x), plain(x) - np.log(0.8 / 0.2), atol=1e-5)


def test_the_protocol_averages_the_configs_tta_flips_as_the_engine_does(tmp_path):
    import torch
    from helpers import interactive_config, write_model

    from engines.evaluation.interactive import load_network
    from engines.inferers import FlipAveraged

    x = np.random.default_rng(1).normal(size=(5, 32, 32, 32)).astype(np.float32)
    flipped, config, backend = load_network(write_model(tmp_path, "tta", interactive_config(tta_flips=[[0], [2]])))
    plain, _, _ = load_network(write_model(tmp_path, "plain", interactive_config()))
    expected = FlipAveraged(backend, [[0], [2]])(torch.from_numpy(x)[None])[0, 0].numpy()
    assert config.tta_flips == [[0], [2]]
    np.testing.assert_allclose(flipped(x), expected, atol=1e-5)
    assert not np.allclose(flipped(x), plain(x), atol=1e-3)  # random weights are not flip-equivariant


def test_interactive_settings_are_the_model_options_with_defaults_filled_also_without_any():
    from helpers import interactive_config

    from engines.config.model import ModelConfig
    from engines.evaluation.interactive import interactive_settings

    cfg = interactive_config(interactive={"margin": 0.3})
    settings = interactive_settings(ModelConfig.model_validate(cfg))
    assert settings["margin"] == 0.3
    assert "max_zooms" in settings  # defaults filled in, as the engine sees them
    without = interactive_settings(ModelConfig.model_validate({k: v for k, v in cfg.items() if k != "interactive"}))
    assert without == {**settings, "margin": 0.25}  # the config model's defaults, as the engine would crop
    plain = interactive_settings(SimpleNamespace(interactive={"max_zooms": 0}))  # a plain mapping is validated too
    assert plain == {**without, "max_zooms": 0}
