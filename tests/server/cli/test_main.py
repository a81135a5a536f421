import json


from server.cli.main import build_parser, main


def test_serve_defaults_match_the_quick_start():
    args = build_parser().parse_args(["serve"])
    assert (args.config, args.host, args.port) == ("engine_pool.json", "127.0.0.1", 5000)
    args = build_parser().parse_args(["serve", "--config", "x.json", "--host", "0.0.0.0", "--port", "8000"])
    assert (args.config, args.host, args.port) == ("x.json", "0.0.0.0", 8000)


def test_train_reports_config_errors_without_a_traceback(tmp_path, capsys):
    bad = tmp_path / "model.json"
    bad.write_text(json.dumps({"type": "segmentation"}))
    code = main(["train", "--config", str(bad), "--datalist", str(tmp_path / "d.json"),
                 "--train-config", str(tmp_path / "t.json")])
    assert code == 2
    err = capsys.readouterr().err
    assert "model.json" in err and "key 'labels'" in err


def test_train_writes_under_runs_by_default_never_over_the_configured_weights(tmp_path, monkeypatch):
    from helpers import segmentation_config, write_model, write_phantom_datalist

    datalist = write_phantom_datalist(tmp_path / "data")
    config = write_model(tmp_path / "models", "seg", segmentation_config())
    shipped = (tmp_path / "models" / "model.pt").read_bytes()
    (tmp_path / "train.json").write_text(json.dumps({"epochs": 1, "batch_size": 2, "val_interval": 1}))
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", str(config), "--datalist", str(datalist), "--train-config", "train.json",
                 "--device", "cpu"]) == 0
    assert (tmp_path / "runs" / "train" / "seg" / "model.pt").is_file()
    assert (tmp_path / "models" / "model.pt").read_bytes() == shipped


def test_serve_with_a_missing_or_broken_pool_file_says_so_in_one_line(tmp_path, capsys):
    assert main(["serve", "--config", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "missing.json" in err and "cannot read" in err
    (tmp_path / "broken.json").write_text("[{")
    assert main(["serve", "--config", str(tmp_path / "broken.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "invalid JSON" in err


def test_a_second_server_on_the_same_state_folder_refuses_before_touching_its_jobs(tmp_path):
    import os
    import subprocess
    import sys

    from fastapi.testclient import TestClient

    from conftest import standin_pool
    from helpers import REPO
    from server.app import create_app
    from server.jobs.store import JobState, JobStore
    from server.settings import Settings

    settings = Settings(config=str(tmp_path / "unused.json"), state_dir=str(tmp_path / "state"))
    pool = tmp_path / "pool.json"
    pool.write_text("[]")
    with TestClient(create_app(settings, standin_pool())):
        jobs = JobStore(settings.job_db_url())
        job = jobs.create("train", "m", None, {}, str(tmp_path / "state" / "jobs"))
        jobs.update(job["id"], state=JobState.RUNNING)  # as if its worker ran now
        env = {**os.environ, "AIAA_STATE_DIR": str(tmp_path / "state"),
               "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "client"), os.environ.get("PYTHONPATH", "")])}
        second = subprocess.run([sys.executable, "-m", "server.cli.main", "serve", "--config", str(pool),
                                 "--port", "0"], env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and "already uses the state folder" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        assert jobs.get(job["id"])["state"] == JobState.RUNNING  # the second one never recovered "its" jobs
        jobs.update(job["id"], state=JobState.FAILED)
