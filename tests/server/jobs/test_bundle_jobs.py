"""Bundle jobs: train, fine-tune and evaluate a MONAI bundle with its own configs, as the worker would run them.

The bundle mirrors spleen_ct_segmentation's train.json, evaluate.json and multi_gpu_train.json
(tiny network, 16^3 crops); the data are the phantom cases. Each planned step is run as the job
supervisor runs a step: one command line in the job's folder.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from bundle_helpers import write_training_bundle
from helpers import write_phantom_datalist

from engines.errors import ConfigError
from server.jobs.bundle_commands import bundle_failure, bundle_plan, bundle_result, latest_checkpoint


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _parameters(path) -> dict[str, list]:
    """Trainable weights (batch-norm statistics move even at a zero learning rate)."""
    state = torch.load(path, weights_only=True)
    return {k: v.tolist() for k, v in state.items() if "running_" not in k and "num_batches" not in k}


def _run(kind: str, params: dict, bundle: Path, datalist: Path, work: Path) -> tuple[dict, str]:
    work.mkdir(parents=True)
    [step] = bundle_plan(kind, params, datalist, bundle, work)
    run = subprocess.run(step.argv, cwd=work, capture_output=True, text=True, timeout=600)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-4000:]
    return bundle_result(kind, work), log


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle_jobs")
    return write_training_bundle(root / "spleen"), write_phantom_datalist(root / "data", n=3)


def test_train_finetune_and_evaluate_never_write_into_the_bundle(setup, tmp_path):
    bundle, datalist = setup
    before = _digest(bundle)

    trained, _ = _run("train", {"epochs": 1, "device": "cpu"}, bundle, datalist, tmp_path / "train")
    state = torch.load(trained["weights"], weights_only=True)
    assert set(state) == set(torch.load(bundle / "models" / "model.pt", weights_only=True))
    assert list((tmp_path / "train" / "out").glob("events.out.tfevents.*"))  # TensorBoard, under the job
    progress = [json.loads(line) for line in (tmp_path / "train" / "progress.jsonl").read_text().splitlines()]
    assert progress[-1]["progress"] == 1.0 and progress[-1]["epochs"] == 1  # what the supervisor reads

    # With a zero learning rate a fine-tune saves the weights it started from: the bundle's.
    frozen = {"overrides": {"optimizer#lr": 0.0}, "epochs": 1, "device": "cpu"}
    tuned, log = _run("finetune", frozen, bundle, datalist, tmp_path / "finetune")
    assert f"Restored all variables from {tmp_path / 'finetune' / 'initial_model.pt'}" in log
    assert _parameters(tuned["weights"]) == _parameters(bundle / "models" / "model.pt")
    scratch, _ = _run("train", frozen, bundle, datalist, tmp_path / "scratch")
    assert _parameters(scratch["weights"]) != _parameters(bundle / "models" / "model.pt")

    evaluated, _ = _run("evaluate", {"device": "cpu"}, bundle, datalist, tmp_path / "evaluate")
    assert 0.0 <= evaluated["mean_dice"] <= 1.0

    assert _digest(bundle) == before and not (bundle / "eval").exists()


def test_two_processes_train_over_gloo_without_a_gpu(setup, tmp_path):
    bundle, datalist = setup
    with pytest.raises(ConfigError, match="at least 2 validation cases"):
        bundle_plan("train", {"gpus": 2}, datalist, bundle, tmp_path / "refused")
    cases = json.loads(datalist.read_text())
    two_validating = tmp_path / "datalist.json"  # each process validates one case
    two_validating.write_text(json.dumps({"training": cases["training"], "validation": cases["training"][:1]
                                          + cases["validation"]}).replace('"images/', f'"{datalist.parent}/images/')
                              .replace('"labels/', f'"{datalist.parent}/labels/'))
    trained, log = _run("train", {"epochs": 1, "gpus": 2, "device": "cpu"}, bundle, two_validating, tmp_path / "ddp")
    assert Path(trained["weights"]).is_file()
    args = (tmp_path / "ddp" / "bundle_args.json").read_text()
    assert "backend='gloo'" in args and "torch.cuda.set_device" not in args


@pytest.mark.parametrize("params, message", [
    ({"overrides": {"train#trainer#max_epochs": "$1"}}, "not allowed"),
    ({"overrides": {"network_def#_target_": "os.system"}}, "not allowed"),
    ({"gpus": 0}, "positive integer"),
    ({"device": "tpu"}, "auto, cpu or cuda"),
])
def test_bad_params_are_refused_before_anything_runs(setup, tmp_path, params, message):
    bundle, datalist = setup
    with pytest.raises(ConfigError, match=message):
        bundle_plan("train", params, datalist, bundle, tmp_path)
    assert not (tmp_path / "bundle_args.json").exists()


def test_a_bundle_without_an_evaluation_config_cannot_be_evaluated(setup, tmp_path):
    bundle, datalist = setup
    partial = tmp_path / "partial"
    shutil.copytree(bundle, partial)
    (partial / "configs" / "evaluate.json").unlink()
    with pytest.raises(ConfigError, match="no configs/evaluate.json"):
        bundle_plan("evaluate", {}, datalist, partial, tmp_path / "work")


def test_bundle_jobs_through_the_jobs_api_register_versions_that_roll_back_and_survive_a_restart(tmp_path):
    from fastapi.testclient import TestClient
    from jobs_helpers import AUTH, phantom_setup, wait_for

    from server.app import create_app

    settings = phantom_setup(tmp_path)  # the phantom cases lie in a data root
    bundle = write_training_bundle(tmp_path / "spleen")
    before = _digest(bundle)
    pool = json.loads(Path(settings.config).read_text())
    pool.append({"name": "spleen", "bundle": str(bundle), "overrides": {"inferer#roi_size": [32, 32, 32]}})
    Path(settings.config).write_text(json.dumps(pool))
    datalist = str(tmp_path / "data" / "datalist.json")

    def submit(kind: str, **params):
        return client.post("/admin/jobs", headers=AUTH,
                           json={"kind": kind, "model": "spleen", "datalist": datalist, "params": params})

    def run(kind: str, **params) -> dict:
        job = wait_for(client, submit(kind, **params).json()["job_id"],
                       lambda j: j["state"] in ("succeeded", "failed"), timeout=600)
        assert job["state"] == "succeeded", job
        return job

    def served() -> tuple[str, Path]:
        version = {m["name"]: m for m in client.get("/v1/models").json()}["spleen"]["version"]
        return version, client.app.state.pool.record("spleen").engine.parts.folder

    with TestClient(create_app(settings)) as client:
        assert submit("train", overrides={"optimizer#lr": "$0"}).status_code == 400
        assert submit("train", learning_rate=0.1).status_code == 400  # our trainer's keys are not a bundle's
        assert submit("export", format="onnx").status_code == 400
        assert served() == ("1", bundle)  # the configured folder is version 1, served as loaded

        job = run("train", epochs=1, device="cpu")
        assert job["result"]["deployed"] and job["result"]["version"] == "2" and job["progress"] == 1.0
        version, folder = served()
        assert version == "2" and folder == settings.model_store_path() / "spleen" / "2" / "bundle"
        assert torch.equal(*(torch.load(f, weights_only=True)["model.0.conv.unit0.conv.weight"] for f in (
            folder / "models" / "model.pt", tmp_path / "state" / "jobs" / job["id"] / "bundle" / "models" / "model.pt")))

        kept = run("finetune", epochs=1, device="cpu", deploy=False)  # starts from version 2, the serving one
        assert kept["result"] == {**kept["result"], "version": "3", "base_version": "2", "deployed": False}
        assert served()[0] == "2"
        versions = client.get("/admin/models/spleen/versions", headers=AUTH).json()
        assert [(v["version"], v["source"]["kind"]) for v in versions["versions"]] == [
            ("1", "configured"), ("2", "train"), ("3", "finetune")]

        assert client.put("/admin/models/spleen/serving", headers=AUTH, json={"version": "1"}).status_code == 200
        assert served()[0] == "1"
        job = run("evaluate", device="cpu")
        assert 0.0 <= job["result"]["mean_dice"] <= 1.0
        assert client.put("/admin/models/spleen/serving", headers=AUTH, json={"version": "3"}).status_code == 200

    with TestClient(create_app(settings)) as client:  # a restart serves the version deployed last, from the store
        assert served() == ("3", settings.model_store_path() / "spleen" / "3" / "bundle")
    assert _digest(bundle) == before


def test_a_resumed_bundle_training_continues_after_its_last_epoch_checkpoint(setup, tmp_path):
    bundle, datalist = setup
    work = tmp_path / "job"
    _run("train", {"epochs": 1, "device": "cpu"}, bundle, datalist, work)  # as if it were killed after epoch 1
    assert [p.name for p in (work / "resume").iterdir()] == ["checkpoint_epoch=1.pt"]
    (work / "progress.jsonl").unlink()

    [step] = bundle_plan("train", {"epochs": 2, "device": "cpu"}, datalist, bundle, work, resume=True)
    assert step.extra["resume"] == {"from_epoch": 1, "checkpoint": str(work / "resume" / "checkpoint_epoch=1.pt")}
    run = subprocess.run(step.argv, cwd=work, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    assert f"Restored all variables from {work / 'resume' / 'checkpoint_epoch=1.pt'}" in run.stdout + run.stderr
    epochs = {json.loads(line)["epoch"] for line in (work / "progress.jsonl").read_text().splitlines()}
    assert epochs == {2}  # only the epoch left was trained
    assert latest_checkpoint(work) == work / "resume" / "checkpoint_epoch=2.pt"
    assert Path(bundle_result("train", work)["weights"]).is_file()


def test_a_resume_without_a_checkpoint_starts_again_and_says_so(setup, tmp_path):
    bundle, datalist = setup
    work = tmp_path / "job"
    work.mkdir()
    [first] = bundle_plan("finetune", {"epochs": 1}, datalist, bundle, work)
    assert "resume" not in first.extra
    (work / "bundle" / "configs" / "leftover.json").write_text("{}")  # what a killed first attempt left
    [again] = bundle_plan("finetune", {"epochs": 1}, datalist, bundle, work, resume=True)
    assert "starts again from the beginning" in again.extra["resume"]["restarted"]
    assert not (work / "bundle" / "configs" / "leftover.json").exists()
    args = json.loads((work / "bundle_args.json").read_text())
    assert "aiaa_resume_loader" not in args and "aiaa_finetune_loader" in args


def test_a_training_crop_larger_than_the_data_fails_with_our_message(setup, tmp_path):
    bundle, datalist = setup
    work = tmp_path / "job"
    work.mkdir()
    crop = {"train#random_transforms#0#spatial_size": [16, 16, 64]}  # the phantom cases are 40 x 48 x 32
    [step] = bundle_plan("train", {"epochs": 1, "device": "cpu", "overrides": crop}, datalist, bundle, work)
    with open(work / "job.log", "wb") as log:  # as the supervisor runs a step
        assert subprocess.run(step.argv, cwd=work, stdout=log, stderr=subprocess.STDOUT, timeout=600).returncode != 0
    message = bundle_failure(work)
    assert message is not None and message.startswith(
        "the training crop [16, 16, 64] (RandCropByPosNegLabeld) is larger than a training case, [40, 48, 32] after "
        "the bundle's pre-processing (config id 'train#random_transforms#0')")


def test_cases_of_unequal_size_in_a_batch_are_explained_too(tmp_path):
    (tmp_path / "job.log").write_text("RuntimeError: stack expects each tensor to be equal size, but got "
                                      "[1, 16, 16, 16] at entry 0 and [1, 16, 16, 12] at entry 1\n")
    message = bundle_failure(tmp_path)
    assert message is not None and "[1, 16, 16, 16] and [1, 16, 16, 12]" in message
    (tmp_path / "job.log").write_text("ValueError: something else\n")
    assert bundle_failure(tmp_path) is None
