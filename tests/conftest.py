"""Shared fixtures: an app with stand-in engines (no trained weights needed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "client"))  # aiaa_client, its own distribution

from helpers import (  # noqa: E402
    annotation_config,
    bright_annotation_net,
    bright_segmentation_net,
    segmentation_config,
    standin_interactive_engine,
)

from engines.config.model import ModelConfig  # noqa: E402
from engines.serving.pool import EnginePool  # noqa: E402
from engines.tasks.dextr3d import Dextr3dEngine  # noqa: E402
from engines.tasks.segmentation import SegmentationEngine  # noqa: E402
from server.app import create_app  # noqa: E402
from server.settings import Settings  # noqa: E402


def standin_pool() -> EnginePool:
    """A pool of two engines whose 'networks' threshold brightness."""
    pool = EnginePool()
    pool.add(Dextr3dEngine("annotation_test", ModelConfig.model_validate(annotation_config()), bright_annotation_net))
    pool.add(SegmentationEngine("segmentation_test", ModelConfig.model_validate(segmentation_config()),
                                bright_segmentation_net))
    return pool


def interactive_pool() -> EnginePool:
    """The stand-in pool plus two stand-in interactive (deepgrow) models."""
    pool = standin_pool()
    pool.add(standin_interactive_engine("interactive_test"))
    pool.add(standin_interactive_engine("interactive_other"))
    return pool


@pytest.fixture(scope="session")
def _state_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("aiaa_state"))


@pytest.fixture(autouse=True)
def _isolated_state(_state_dir, monkeypatch) -> None:
    """Job table, model versions and datasets of test servers live in a temporary folder, never in runs/."""
    monkeypatch.setenv("AIAA_STATE_DIR", _state_dir)


@pytest.fixture()
def settings() -> Settings:
    return Settings(config="unused.json", max_upload_bytes=8 * 1024 * 1024, max_voxels=200_000,
                    session_memory_bytes=64 * 1024 * 1024)


@pytest.fixture()
def client(settings: Settings):
    with TestClient(create_app(settings, standin_pool())) as c:
        yield c


@pytest.fixture()
def interactive_app(settings: Settings):
    return create_app(settings, interactive_pool())


@pytest.fixture()
def iclient(interactive_app):
    with TestClient(interactive_app) as c:
        yield c
