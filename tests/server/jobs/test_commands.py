"""The job kinds' command lines and parameter checks (no server, no worker)."""

import json
import math
import sys

import numpy as np
import pytest
from helpers import annotation_config, write_model, write_phantom_datalist

from engines.errors import ConfigError
from engines.evaluation.scoring import dice_per_label, surface_scores
from server.cli.main import main
from server.jobs.commands import JOB_KINDS, check_params, plan
from server.jobs.supervisor import evaluation_result


def test_an_export_job_passes_its_options_on_and_refuses_unknown_or_missing_ones(tmp_path):
    steps = plan("export", {"format": "onnx", "max_cases": 2, "repeats": 3}, None, tmp_path / "m.json", tmp_path,
                 resume=False)
    argv = steps[0].argv
    assert argv[argv.index("--max-cases") + 1] == "2" and argv[argv.index("--repeats") + 1] == "3"
    assert argv[argv.index("--progress-file") + 1] == str(tmp_path / "progress.jsonl")  # its heartbeat
    with pytest.raises(ConfigError, match="unknown export job parameter.*'formt'"):
        check_params("export", {"formt": "onnx"}, tmp_path / "m.json")  # was: "unknown export format 'None'"
    with pytest.raises(ConfigError, match="needs params.format"):
        check_params("export", {}, tmp_path / "m.json")
    with pytest.raises(ConfigError, match="max_cases must be a positive integer"):
        check_params("export", {"format": "onnx", "max_cases": "all"}, tmp_path / "m.json")
    with pytest.raises(ConfigError, match="unknown evaluate job parameter"):
        check_params("evaluate", {"epochs": 3}, tmp_path / "m.json")


def test_the_evaluate_job_runs_aiaa_evaluate_and_reports_what_it_wrote(tmp_path):
    datalist = write_phantom_datalist(tmp_path / "data", n=2)
    config = write_model(tmp_path / "model", "tiny", annotation_config())
    steps = plan("evaluate", {"device": "cpu"}, str(datalist), config, tmp_path / "job", resume=False)
    argv = steps[0].argv
    assert argv[:4] == [sys.executable, "-m", "server.cli.main", "evaluate"]  # the user's command, nothing else
    assert main(argv[3:]) == 0  # what the worker runs, run here
    result = evaluation_result(steps[0].output)
    summary = json.loads((steps[0].output / "summary.json").read_text())
    assert result["summary"] == summary and result["cases"][0]["case"] == "c1"
    assert result["mean_dice"] == round(np.mean([s["dice"] for s in summary.values()]), 4)
    progress = [json.loads(line) for line in (tmp_path / "job" / "progress.jsonl").read_text().splitlines()]
    assert progress[-1]["progress"] == 1.0


def test_one_dice_convention_a_label_in_neither_mask_is_not_scored():
    nothing, something = np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8)
    something[1:3, 1:3, 1:3] = 1
    # label 2 is in neither map: not scored by either function (was 1.0 by one, NaN by the other)
    assert math.isnan(dice_per_label(something, something, 2)[1])
    assert math.isnan(surface_scores(nothing, nothing, (1, 1, 1))[0])
    assert dice_per_label(something, nothing, 1) == [0.0] and surface_scores(something, nothing, (1, 1, 1))[0] == 0.0
    assert dice_per_label(something, something, 1) == [1.0]


def test_every_kind_is_in_the_one_registry():
    assert set(JOB_KINDS) == {"train", "finetune", "evaluate", "export"}
    assert {k for k, kind in JOB_KINDS.items() if kind.resumable} == {"train", "finetune"}


def test_a_training_is_followed_by_both_evaluations_and_the_export_the_base_serves(tmp_path, monkeypatch):
    import server.jobs.commands as commands

    datalist = write_phantom_datalist(tmp_path / "data", n=2)
    config = write_model(tmp_path / "model", "tiny", annotation_config())
    (tmp_path / "job").mkdir()
    (tmp_path / "job2").mkdir()
    steps = plan("finetune", {"epochs": 1}, str(datalist), config, tmp_path / "job", resume=False)
    assert [s.extra["role"] for s in steps] == ["train", "evaluate_base", "evaluate_new"]  # the checkpoint serves
    trained = json.loads((tmp_path / "job" / "trained_model_config.json").read_text())
    assert trained["model_path"] == str(steps[0].output / "model.pt")  # the new weights, not the base's
    evaluate_new = steps[2].argv
    assert evaluate_new[evaluate_new.index("--config") + 1] == str(tmp_path / "job" / "trained_model_config.json")

    monkeypatch.setattr(commands, "served_export", lambda path: ("openvino", "bf16"))  # a base served on OpenVINO
    steps = plan("finetune", {"epochs": 1}, str(datalist), config, tmp_path / "job2", resume=False)
    export = steps[-1]
    assert export.extra["role"] == "export" and export.argv[3] == "export"
    assert export.argv[export.argv.index("--format") + 1] == "openvino"
    assert export.argv[export.argv.index("--precision") + 1] == "bf16"
    with pytest.raises(ConfigError, match="max_dice_drop"):
        check_params("finetune", {"epochs": 1, "max_dice_drop": 2}, config)
