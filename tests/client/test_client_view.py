"""``aiaa-client view``: uploads the image and prints (and opens) the viewer's address for its session."""

from __future__ import annotations

import pytest
from aiaa_client import cli
from conftest import standin_pool
from helpers import CT_DICOM_SERIES, phantom, serve_in_thread

from engines.data.io import write_volume
from server.app import create_app
from server.settings import Settings


@pytest.fixture(scope="module")
def server():
    app = create_app(Settings(config="unused.json", max_voxels=6_000_000), standin_pool())
    with serve_in_thread(app) as port:
        yield f"http://127.0.0.1:{port}", app


@pytest.fixture()
def image(tmp_path):
    volume, _ = phantom()
    path = tmp_path / "phantom.nii.gz"
    path.write_bytes(write_volume(volume.array, volume.geometry, ".nii.gz", dtype="float32"))
    return path, volume


def test_view_uploads_prints_and_opens_the_session_address(server, image, capsys, monkeypatch):
    url, app = server
    opened = []
    monkeypatch.setattr(cli.webbrowser, "open", lambda address: opened.append(address) or True)
    path, volume = image
    assert cli.main(["--server", url, "view", str(path)]) == 0
    address = capsys.readouterr().out.strip()
    assert address.startswith(f"{url}/?session=")
    session = app.state.sessions.get(address.split("session=")[1])
    assert session is not None and session.volume.shape == volume.shape and session.name == "phantom.nii.gz"
    assert opened == [address]


def test_view_no_open_only_prints(server, image, capsys, monkeypatch):
    url, _ = server
    monkeypatch.setattr(cli.webbrowser, "open", lambda address: pytest.fail("opened a browser"))
    assert cli.main(["--server", url, "view", str(image[0]), "--no-open", "--expiry", "60"]) == 0
    assert "/?session=" in capsys.readouterr().out


def test_view_of_a_missing_file_or_an_unreachable_server_fails_with_one_line(server, image, tmp_path, capsys):
    url, _ = server
    assert cli.main(["--server", url, "view", str(tmp_path / "missing.nii.gz"), "--no-open"]) == 2
    assert "missing.nii.gz" in capsys.readouterr().err
    assert cli.main(["--server", "http://127.0.0.1:9", "view", str(image[0]), "--no-open"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("aiaa-client:") and err.count("\\n") <= 1


def test_view_of_a_dicom_folder(server, capsys, monkeypatch):
    if not CT_DICOM_SERIES.is_dir():
        pytest.skip("../shared/data/totalsegmentator_example is absent (real data lives beside the repo)")
    url, app = server
    monkeypatch.setattr(cli.webbrowser, "open", lambda address: True)
    assert cli.main(["--server", url, "view", str(CT_DICOM_SERIES)]) == 0
    sid = capsys.readouterr().out.strip().split("session=")[1]
    assert app.state.sessions.get(sid).volume.shape[:2] == (512, 512)
