"""What a real server start sets up for staying responsive under load (a pool loaded from its config)."""

import gc

from anyio import to_thread
from fastapi.testclient import TestClient
from helpers import annotation_config, write_model, write_pool

from server.app import create_app
from server.settings import Settings


def test_start_up_objects_leave_the_collector_and_blocking_work_gets_a_bounded_pool(tmp_path):
    write_model(tmp_path, "ann", annotation_config())
    pool = write_pool(tmp_path, [{"name": "ann", "class": "Dextr3dCroppedEngine",
                                  "module": "medical.aas.dextr3dcropped", "config_file": "ann.json"}])
    settings = Settings(config=str(pool), state_dir=str(tmp_path / "state"), warmup=False, worker_threads=3)
    gc.unfreeze()
    try:
        with TestClient(create_app(settings)) as client:
            assert client.get("/health/ready").status_code == 200
            assert gc.get_freeze_count() > 0  # a full collection no longer walks the loaded models
            limit = client.portal.call(lambda: to_thread.current_default_thread_limiter().total_tokens)
            assert limit == 3
    finally:
        gc.unfreeze()


def test_the_worker_thread_default_is_two_per_core_and_at_least_four(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert Settings(config="x").worker_thread_count() == 4
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert Settings(config="x").worker_thread_count() == 16
