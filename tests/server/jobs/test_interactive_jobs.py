"""Jobs of an interactive (deepgrow) model: the evaluate job runs the interactive protocol."""

import json
import sys

import pytest
from fastapi.testclient import TestClient
from helpers import interactive_config, write_model, write_phantom_datalist, write_pool
from jobs_helpers import AUTH, TOKEN, wait_for

from engines.errors import ConfigError
from server.app import create_app
from server.cli.main import main
from server.jobs.commands import check_params, plan
from server.jobs.supervisor import evaluation_result
from server.settings import Settings


def interactive_setup(tmp):
    """A server with a tiny random interactive model and a phantom dataset (labels 1 and 2: two halves)."""
    data = write_phantom_datalist(tmp / "data", n=2).parent
    config = write_model(tmp / "model", "tiny_interactive", interactive_config())
    pool = write_pool(tmp, [{"name": "tiny_interactive", "class": "InteractiveEngine",
                             "module": "engines.tasks.interactive", "config_file": "model/tiny_interactive.json"}])
    settings = Settings(config=str(pool), state_dir=str(tmp / "state"), admin_token=TOKEN, data_roots=str(data),
                        job_stop_grace_s=60, warmup=False, job_niceness=0)
    return settings, config, data / "datalist.json"


def test_the_evaluate_job_of_an_interactive_model_is_aiaa_evaluate_interactive(tmp_path):
    _, config, datalist = interactive_setup(tmp_path)
    params = {"clicks": 2, "variants": ["box", "clicks"], "structures": ["label_1", "foreground"]}
    steps = plan("evaluate", params, str(datalist), config, tmp_path / "job", resume=False)
    argv = steps[0].argv
    assert argv[:5] == [sys.executable, "-m", "server.cli.main", "evaluate", "--config"]
    assert "--interactive" in argv and argv[argv.index("--clicks") + 1] == "2"
    assert argv[argv.index("--variants") + 1:argv.index("--variants") + 3] == ["box", "clicks"]
    assert main(argv[3:]) == 0  # what the worker runs, run here
    result = evaluation_result(steps[0].output)
    summary = json.loads((steps[0].output / "summary.json").read_text())
    assert result["summary"] == summary and result["variant"] == "box"
    box = summary["box"]["overall"]
    assert box["objects"] == 2 and set(summary["box"]["structures"]) == {"datalist/label_1", "datalist/foreground"}
    assert {k: result[k] for k in ("dice_final", "dice_auc", "nsd_final")} == \
        {k: box[k] for k in ("dice_final", "dice_auc", "nsd_final")}
    assert result["mean_dice"] == box["dice_final"]  # what a fine-tune's quality gate compares
    progress = [json.loads(line) for line in (tmp_path / "job" / "progress.jsonl").read_text().splitlines()]
    assert progress[-1]["progress"] == 1.0  # the worker's heartbeat and progress, for the supervisor


@pytest.mark.parametrize(("params", "message"), [
    ({"split": "training"}, "unknown interactive evaluate job parameter.*'split'"),
    ({"clicks": -1}, "params.clicks must be an integer of at least 0"),
    ({"max_objects": 0}, "params.max_objects must be an integer of at least 1"),
    ({"variants": ["lasso"]}, "params.variants must be a non-empty list of box, challenge_box"),
    ({"structures": "myo"}, "params.structures must be a non-empty list"),
])
def test_interactive_evaluate_parameters_are_checked(tmp_path, params, message):
    _, config, _ = interactive_setup(tmp_path)
    with pytest.raises(ConfigError, match=message):
        check_params("evaluate", params, config)


def test_an_evaluate_job_through_the_api_reports_the_protocol_figures(tmp_path):
    settings, _, datalist = interactive_setup(tmp_path)
    with TestClient(create_app(settings)) as client:
        refused = client.post("/admin/jobs", headers=AUTH, json={
            "kind": "evaluate", "model": "tiny_interactive", "datalist": str(datalist), "params": {"split": "x"}})
        assert refused.status_code == 400 and refused.json()["error"]
        assert client.get("/admin/jobs", headers=AUTH).json() == []  # a refused job changes nothing

        reply = client.post("/admin/jobs", headers=AUTH, json={
            "kind": "evaluate", "model": "tiny_interactive", "datalist": str(datalist), "params": {"clicks": 1}})
        assert reply.status_code == 202, reply.text
        job = wait_for(client, reply.json()["job_id"], lambda j: j["state"] not in ("queued", "running"))
    assert job["state"] == "succeeded", job["error"]
    result = job["result"]
    for key in ("dice_final", "dice_auc", "nsd_final"):
        assert 0.0 <= result[key] <= 2.0  # an AUC over first prompt + 1 click is at most 1
    assert result["objects"] == 3  # label_1, label_2 and their union on the validation case
    assert result["summary"]["protocol"]["n_clicks"] == 1


def test_a_finetune_of_an_interactive_model_starts_from_its_weights_and_is_checked_by_the_protocol(tmp_path):
    _, config, datalist = interactive_setup(tmp_path)
    # the model's own interactive train config, beside its weights
    (tmp_path / "model" / "train_config.json").write_text(json.dumps({
        "interactive": True, "datasets": [{"datalist": "lists/a.json", "weight": 2.0}], "max_minutes": 75,
        "learning_rate": 0.002, "num_threads": 1}))
    with pytest.raises(ConfigError, match="needs params.max_minutes or params.max_steps"):
        check_params("finetune", {}, config)
    with pytest.raises(ConfigError, match="epochs"):
        check_params("finetune", {"max_steps": 2, "epochs": 1}, config)  # a classic key: not an interactive one

    (tmp_path / "job").mkdir()
    steps = plan("finetune", {"max_steps": 2, "learning_rate": 5e-4}, str(datalist), config, tmp_path / "job",
                 resume=False)
    assert [s.extra["role"] for s in steps] == ["train", "evaluate_base", "evaluate_new"]
    written = json.loads((tmp_path / "job" / "train_config.json").read_text())
    assert written["interactive"] is True and written["max_steps"] == 2 and written["learning_rate"] == 5e-4
    assert written["init_weights"] == str(tmp_path / "model" / "model.pt")  # from the serving version's weights
    # the job's datalist replaces the model's own datalists (relative to a folder the job does not run in)
    assert "datasets" not in written and "max_minutes" not in written and "epochs" not in written
    assert steps[0].argv[steps[0].argv.index("--datalist") + 1] == str(datalist)
    for check in steps[1:]:
        assert "--interactive" in check.argv and "--device" not in check.argv


def test_a_finetune_job_of_an_interactive_model_through_the_api_registers_a_gated_version(tmp_path):
    settings, _, datalist = interactive_setup(tmp_path)
    with TestClient(create_app(settings)) as client:
        reply = client.post("/admin/jobs", headers=AUTH, json={
            "kind": "finetune", "model": "tiny_interactive", "datalist": str(datalist),
            "params": {"max_steps": 2, "batch_size": 1, "max_rounds": 1, "val_objects_per_dataset": 1,
                       "num_threads": 1, "max_dice_drop": 1.0}})
        assert reply.status_code == 202, reply.text
        job = wait_for(client, reply.json()["job_id"], lambda j: j["state"] not in ("queued", "running"),
                       timeout=300)
        assert job["state"] == "succeeded", client.get(f"/admin/jobs/{job['id']}/logs", headers=AUTH).text
        gate = job["result"]["metrics"]["quality_gate"]  # the protocol's Dice after the clicks, new against base
        assert gate["passed"] and 0 <= gate["dice"] <= 1 and 0 <= gate["base_dice"] <= 1
        assert job["result"]["version"] == "2" and job["result"]["deployed"] is True
        assert client.get("/v1/models").json()[0]["version"] == "2"


def with_own_datalist(tmp):
    """The interactive setup, its model trained (per its train config) on another phantom datalist."""
    settings, config, datalist = interactive_setup(tmp)
    own = write_phantom_datalist(tmp / "own", n=2)
    (tmp / "model" / "train_config.json").write_text(json.dumps({
        "interactive": True, "datasets": [{"datalist": "../own/datalist.json", "weight": 2.0}], "max_minutes": 75}))
    return settings, config, datalist, own


def test_a_finetune_with_replay_mixes_in_the_datalists_the_version_was_trained_on_and_checks_them(tmp_path):
    _, config, datalist, own = with_own_datalist(tmp_path)
    (tmp_path / "job").mkdir()
    steps = plan("finetune", {"max_steps": 2, "replay": 0.25, "others_max_objects": 2}, str(datalist), config,
                 tmp_path / "job", resume=False)
    written = json.loads((tmp_path / "job" / "train_config.json").read_text())
    # a quarter of the samples from the version's own datalist (weight 2), three quarters from the job's
    assert written["datasets"] == [{"datalist": str(own), "weight": 2.0}, {"datalist": str(datalist), "weight": 6.0}]
    assert "--datalist" not in steps[0].argv  # it would replace the train config's datasets
    roles = [s.extra["role"] for s in steps]
    assert roles == ["train", "evaluate_base", "evaluate_new", "evaluate_base_others", "evaluate_new_others"]
    for check in steps[3:]:
        argv = check.argv
        assert argv[argv.index("--datalist") + 1] == str(own) and argv[argv.index("--max-objects") + 1] == "2"

    # without replay the job's datalist alone is trained on, but the version's own datalists are still checked
    steps = plan("finetune", {"max_steps": 2}, str(datalist), config, tmp_path / "job", resume=False)
    assert "datasets" not in json.loads((tmp_path / "job" / "train_config.json").read_text())
    assert steps[0].argv[steps[0].argv.index("--datalist") + 1] == str(datalist)
    assert [s.extra["role"] for s in steps][-2:] == ["evaluate_base_others", "evaluate_new_others"]


@pytest.mark.parametrize(("params", "message"), [
    ({"replay": 1.0}, "params.replay must be a number from 0 to below 1"),
    ({"replay": "half"}, "params.replay must be a number"),
    ({"others_max_objects": 0}, "params.others_max_objects must be an integer of at least 1"),
])
def test_replay_parameters_are_checked(tmp_path, params, message):
    _, config, _, _ = with_own_datalist(tmp_path)
    with pytest.raises(ConfigError, match=message):
        check_params("finetune", {"max_steps": 2, **params}, config)


def test_replay_needs_datalists_the_version_was_trained_on(tmp_path):
    _, config, _ = interactive_setup(tmp_path)  # no train_config.json beside the weights
    with pytest.raises(ConfigError, match="lists no datalists it was trained on"):
        check_params("finetune", {"max_steps": 2, "replay": 0.5}, config)


def test_a_finetune_job_with_replay_through_the_api_is_gated_on_both_datalists(tmp_path):
    settings, _, datalist, _ = with_own_datalist(tmp_path)
    with TestClient(create_app(settings)) as client:
        reply = client.post("/admin/jobs", headers=AUTH, json={
            "kind": "finetune", "model": "tiny_interactive", "datalist": str(datalist),
            "params": {"max_steps": 2, "batch_size": 1, "max_rounds": 1, "val_objects_per_dataset": 1,
                       "num_threads": 1, "max_dice_drop": 1.0, "replay": 0.5, "others_max_objects": 1}})
        assert reply.status_code == 202, reply.text
        job = wait_for(client, reply.json()["job_id"], lambda j: j["state"] not in ("queued", "running"),
                       timeout=300)
        assert job["state"] == "succeeded", client.get(f"/admin/jobs/{job['id']}/logs", headers=AUTH).text
    gate = job["result"]["metrics"]["quality_gate"]
    assert gate["passed"] and job["result"]["deployed"] is True
    for key in ("dice", "base_dice", "others_dice", "others_base_dice"):
        assert 0 <= gate[key] <= 1
