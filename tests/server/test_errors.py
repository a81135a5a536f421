"""Error replies: every failure is ``{error, detail}`` with the status its class carries."""

import json

import torch
from fastapi.testclient import TestClient
from helpers import phantom, segmentation_config

from engines.config.model import ModelConfig
from engines.data.io import write_volume
from engines.serving.pool import EnginePool
from engines.tasks.segmentation import SegmentationEngine
from server.app import create_app


def _out_of_memory(x: torch.Tensor) -> torch.Tensor:
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_a_gpu_out_of_memory_is_a_503_with_retry_after_not_a_500(settings):
    pool = EnginePool()
    pool.add(SegmentationEngine("full_gpu", ModelConfig.model_validate(segmentation_config()), _out_of_memory))
    volume, _ = phantom()
    with TestClient(create_app(settings, pool)) as client:
        reply = client.post("/v1/segmentation?model=full_gpu", data={"params": "{}"},
                            files={"image": ("v.nii.gz", write_volume(volume.array, volume.geometry, ".nii.gz"))})
    assert reply.status_code == 503 and int(reply.headers["retry-after"]) >= 1
    assert reply.json()["error"] == "ResourceExhaustedError" and "retry" in reply.json()["detail"]


def test_unknown_routes_and_methods_answer_in_the_documented_shape(client):
    missing = client.get("/v1/no-such-route")
    assert missing.status_code == 404
    assert set(missing.json()) == {"error", "detail"} and "/v1/no-such-route" in missing.json()["detail"]
    assert missing.json()["error"] == "RouteNotFound"  # not a model or session that is missing
    wrong = client.delete("/v1/models")
    assert wrong.status_code == 405 and wrong.json()["error"] == "MethodNotAllowed"
    assert "DELETE" in wrong.json()["detail"] and "allow" in {k.lower() for k in wrong.headers}
    assert json.loads(client.get("/health").text)  # real routes unaffected


def test_the_three_meanings_of_a_config_error_are_three_errors_with_their_own_status():
    from engines.errors import ConfigError, InvalidNameError, ModelLoadError, VersionExistsError
    from server.errors import STATUS_OF

    status = {cls: next(code for c, code in STATUS_OF if issubclass(cls, c))
              for cls in (InvalidNameError, VersionExistsError, ModelLoadError)}
    assert status == {InvalidNameError: 400, VersionExistsError: 409, ModelLoadError: 409}
    assert not any(issubclass(cls, ConfigError) for cls in status)  # none is "a config file is invalid"
