"""``aiaa jobs`` and ``aiaa models`` against a running server."""

import json

from helpers import serve_in_thread
from jobs_helpers import TOKEN, phantom_setup

from server.app import create_app
from server.cli import main


def test_the_admin_cli_submits_follows_and_rolls_back(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AIAA_ADMIN_TOKEN", TOKEN)
    with serve_in_thread(create_app(phantom_setup(tmp_path))) as port:
        server = ["--server", f"http://127.0.0.1:{port}"]
        datalist = str(tmp_path / "data" / "datalist.json")
        assert main(["jobs", "submit", "finetune", "--model", "tiny", "--datalist", datalist, "--param", "epochs=2",
                     "--param", "batch_size=2", "--follow", *server]) == 0
        out = capsys.readouterr().out
        job_id = json.loads(out[: out.index("}") + 1])["job_id"]
        lines = [json.loads(line) for line in out.splitlines() if line.startswith('{"state"')]
        assert lines[-1]["state"] == "succeeded" and lines[-1]["progress"] == 1.0  # plain lines off a terminal

        assert main(["jobs", "list", *server]) == 0
        assert job_id in capsys.readouterr().out
        assert main(["jobs", "show", job_id, *server]) == 0
        assert json.loads(capsys.readouterr().out)["result"]["version"] == "3"
        assert main(["jobs", "logs", job_id, "--lines", "3", *server]) == 0
        assert len(capsys.readouterr().out.strip().splitlines()) == 3
        assert main(["models", "versions", "tiny", *server]) == 0
        assert json.loads(capsys.readouterr().out)["serving"] == "3"
        assert main(["models", "serve", "tiny", "2", *server]) == 0
        assert json.loads(capsys.readouterr().out) == {"model": "tiny", "version": "2"}

        assert main(["jobs", "resume", job_id, *server]) == 2  # a succeeded job does not resume
        assert "only interrupted, cancelled or failed" in capsys.readouterr().err
        assert main(["jobs", "list", "--token", "wrong", *server]) == 2
        assert "HTTP 401" in capsys.readouterr().err
    assert main(["jobs", "list", "--server", "http://127.0.0.1:9"]) == 2
    assert "cannot reach" in capsys.readouterr().err
