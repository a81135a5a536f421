"""The slice-by-slice diagnosis of box masks: what it reports for a model that segments everything or nothing."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from helpers import REPO, deepgrow_config, phantom_datalist

from engines.config.model import load_model_config
from engines.networks import build_network

spec = importlib.util.spec_from_file_location("slice_diagnosis", REPO / "bench" / "interactive_slice_diagnosis.py")
slice_diagnosis = importlib.util.module_from_spec(spec)
spec.loader.exec_module(slice_diagnosis)


def constant_model(folder, logit: float):
    """A tiny deepgrow config whose network answers ``logit`` everywhere (all weights zero, last bias set)."""
    config_path = deepgrow_config(folder)
    network = build_network(load_model_config(config_path).network)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.zero_()
        [*network.parameters()][-1].fill_(logit)
    torch.save(network.state_dict(), folder / "model.pt")
    return config_path


@pytest.mark.parametrize("logit", [10.0, -10.0])
def test_diagnosis_of_a_model_that_answers_everything_or_nothing(tmp_path, logit):
    datalist = phantom_datalist(tmp_path / "data")
    config = constant_model(tmp_path, logit)
    report = slice_diagnosis.diagnose(str(config), str(datalist), "a")
    assert report["objects"] == 1  # the one validation case's object "a"
    if logit > 0:  # the whole crop: every slice of the object reached, the outline too wide
        assert report["slices_reached"] == 1.0 and 0 < report["inplane_dice_on_shared_slices"] < 1
        assert 0 < report["dice_box"] < 1
    else:  # nothing
        assert report["slices_reached"] == 0.0 and report["inplane_dice_on_shared_slices"] == 0.0
        assert report["dice_box"] == 0.0 and report["slices_overflowed"] == 0


def test_main_prints_json_for_each_config(tmp_path, capsys, monkeypatch):
    datalist = phantom_datalist(tmp_path / "data")
    config = constant_model(tmp_path, 10.0)
    monkeypatch.setattr("sys.argv", ["x", str(config), "--datalist", str(datalist), "--structure", "both"])
    slice_diagnosis.main()
    out = json.loads(capsys.readouterr().out)
    assert out["structure"] == "both" and [r["config"] for r in out["runs"]] == [str(config)]


def test_after_clicks_reports_where_the_errors_are(tmp_path):
    datalist = phantom_datalist(tmp_path / "data")
    config = constant_model(tmp_path, 10.0)  # the whole crop, whatever the clicks say
    report = slice_diagnosis.diagnose(str(config), str(datalist), "a", clicks=2)
    after = report["after_2_clicks"]
    assert after["dice"] == report["dice_box"]  # clicks cannot change a constant model's mask
    assert after["missed"] == 0.0 and after["overflow"] > 0  # it only overflows
    assert 0 < after["largest_error_share"] <= 1 and 0 < after["largest_error_slice_span"] <= 1


def test_error_figures_on_hand_made_masks():
    truth = np.zeros((8, 8, 4), bool)
    truth[2:6, 2:6, :] = True  # 64 voxels on 4 slices
    mask = truth.copy()
    mask[2:6, 2:6, 0] = False  # one missed slice (16 voxels)
    mask[0, 0, 3] = True  # one stray voxel apart from it
    figures = slice_diagnosis.error_figures(mask, truth)
    assert figures == {"largest_error_share": 16 / 17, "largest_error_slice_span": 0.25,
                       "missed": 16 / 64, "overflow": 1 / 64}
    assert slice_diagnosis.error_figures(truth, truth)["largest_error_share"] == 0.0
    slices = slice_diagnosis.slice_figures(mask, truth)
    assert slices["slices_reached"] == 0.75 and slices["slices_overflowed"] == 0
