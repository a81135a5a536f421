"""Model versions (admin): list versions, choose the serving one, and Clara's add/get/delete of a model.

``GET /admin/models/{name}/versions``, ``PUT /admin/models/{name}/serving`` ``{"version": "N"}``,
``PUT /admin/model/{name}`` (multipart ``config`` + ``data`` weights), ``GET`` and ``DELETE /admin/model/{name}``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from anyio import to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.datastructures import UploadFile

from engines.config.model import ModelConfig, describe_validation_error
from engines.errors import ConfigError, ModelLoadError
from engines.serving.versions import check_model_name
from server.admin.auth import require_admin
from server.deps import PoolDep, SettingsDep
from server.errors import BadRequest, NotFound
from server.protocols.aiaa.wire import read_form

router = APIRouter(tags=["admin: models"], dependencies=[Depends(require_admin)])


class ServingRequest(BaseModel):
    """Body of ``PUT /admin/models/{name}/serving``."""

    model_config = ConfigDict(extra="forbid")

    version: str | int


def _name(name: str) -> str:
    return check_model_name(name)  # InvalidNameError: 400


@router.get("/admin/models/{name}/versions")
def versions(name: str, request: Request) -> JSONResponse:
    """Every stored version with its source and metrics; ``serving`` marks the one in use."""
    serving = request.app.state.serving
    if not serving.store.numbers(_name(name)):
        raise NotFound(f"model '{name}' has no stored versions (GET /v1/models lists the models)")
    return JSONResponse({"model": name, "serving": serving.serving_version(name), "versions": serving.versions(name)})


@router.put("/admin/models/{name}/serving")
async def set_serving(name: str, body: ServingRequest, request: Request) -> JSONResponse:
    """Roll back or forward: load, warm and switch to another stored version (the old one serves until then)."""
    serving = request.app.state.serving
    # A version that fails to load: ModelLoadError (409), the serving version unchanged.
    return JSONResponse(await to_thread.run_sync(serving.deploy, _name(name), str(body.version)))


@router.get("/admin/model/{name}")
def get_model(name: str, request: Request, pool: PoolDep) -> JSONResponse:
    """The serving model's info, its version and model config."""
    serving = request.app.state.serving
    version, config_path = serving.serving_config(_name(name))
    info = pool.get(name).info()
    bundle = serving.store.bundle_dir(name, version)
    if bundle is not None:  # a MONAI bundle's version: its folder and metadata instead of a model config
        metadata = bundle / "configs" / "metadata.json"
        return JSONResponse({**info, "serving_version": version, "bundle": str(bundle),
                             "metadata": json.loads(metadata.read_text()) if metadata.is_file() else {}})
    return JSONResponse({**info, "serving_version": version, "config": json.loads(config_path.read_text())})


@router.put("/admin/model/{name}")
async def put_model(name: str, request: Request, settings: SettingsDep) -> JSONResponse:
    """Add a model, or a new version of it, from a model config (``config``) and weights (``data``), and serve it.

    Weights must be a PyTorch state dict (loaded weights-only), never a TorchScript file (which can carry code).
    """
    name = _name(name)
    form = await read_form(request, settings.max_upload_bytes, max_files=2)
    raw = form.get("config")
    data = form.get("data")
    if raw is None or not isinstance(data, UploadFile):
        raise BadRequest("send multipart parts 'config' (the model config JSON) and 'data' (the weights file)")
    raw = await raw.read() if isinstance(raw, UploadFile) else raw
    try:
        fields = json.loads(raw)
        fields["model_path"] = "model.pt"
        config = ModelConfig.model_validate(fields)
    except (json.JSONDecodeError, TypeError) as exc:
        raise BadRequest(f"'config' is not a JSON object: {exc}") from None
    except ValidationError as exc:
        raise BadRequest(describe_validation_error("config", exc)) from None
    if config.model_format != "pytorch":
        raise BadRequest("an uploaded model must be a PyTorch state dict (model_format 'pytorch', loaded weights-only); "
                         "TorchScript files can carry code")
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "model.pt"
        weights.write_bytes(await data.read())
        serving = request.app.state.serving
        try:
            result = await to_thread.run_sync(serving.add_model, name, config, weights, {"kind": "upload"})
        except (ConfigError, ModelLoadError) as exc:  # what was uploaded does not load: the request's fault
            raise BadRequest(f"the model does not load: {exc}") from None
    return JSONResponse(result)


@router.delete("/admin/model/{name}")
def delete_model(name: str, request: Request) -> JSONResponse:
    """Stop serving a model and delete its stored versions (a model of engine_pool.json returns at restart)."""
    request.app.state.serving.delete_model(_name(name))
    return JSONResponse({"deleted": name})
