"""Fixtures of the nnInteractive door tests: the app over real HTTP, with the door's clock in hand."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.append(str(Path(__file__).resolve().parent))  # nnint_standin, beside this file (after tests/: its conftest stays "conftest")

from helpers import serve_in_thread
from nnint_standin import Server, make_app

from server.protocols.nninteractive.leases import DoorSettings


@pytest.fixture()
def door_settings() -> DoorSettings:
    return DoorSettings(max_leases=2, idle_timeout_s=600, liveness_timeout_s=60)


@pytest.fixture()
def server(door_settings):
    app, clock, engine = make_app(door_settings)
    with serve_in_thread(app) as port:
        yield Server(f"http://127.0.0.1:{port}/nninteractive", app, app.state.nninteractive, clock, engine)
