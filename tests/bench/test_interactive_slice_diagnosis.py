"""The slice-by-slice diagnosis of box masks: what it reports for a model that segments everything or nothing."""

from __future__ import annotations

import importlib.util
import json

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
