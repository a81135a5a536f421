"""Job parameters checked at submit, before anything reaches a worker's command line.

``gpus`` within the machine's GPUs, ``device`` one of the names the workers accept,
``base_version`` plain ASCII digits, ``init_weights`` inside the model store or a data root.
(The transforms a config may name are checked by their own allowlist.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from server.errors import BadRequest, Forbidden
from server.settings import Settings

__all__ = ["DEVICES", "check_job_params", "inside"]

DEVICES = ("auto", "cpu", "cuda")  # what `aiaa train/evaluate --device` accepts


def inside(path: Path, roots: list[Path]) -> bool:
    """Whether ``path`` (resolved) is one of ``roots`` or lies under one."""
    return any(path == root or root in path.parents for root in roots)


def check_job_params(params: dict[str, Any], settings: Settings, gpu_count: int | None = None) -> None:
    """Refuse job parameters that the machine cannot honour or that reach outside the server's folders.

    Raises:
        BadRequest: ``gpus``, ``device`` or ``base_version`` has a bad value.
        Forbidden: ``init_weights`` lies outside the model store and the data roots.
    """
    gpu_count = torch.cuda.device_count() if gpu_count is None else gpu_count
    if "gpus" in params:
        gpus = params["gpus"]
        if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
            raise BadRequest("params.gpus must be a positive integer")
        if gpus > max(1, gpu_count):
            raise BadRequest(f"params.gpus is {gpus} but this machine has {gpu_count} GPU(s)")
    if "device" in params and params["device"] not in DEVICES:
        raise BadRequest(f"params.device must be one of {', '.join(DEVICES)}")
    if params.get("device") == "cuda" and gpu_count == 0:
        raise BadRequest("params.device is 'cuda' but this machine has no GPU")
    if "base_version" in params:
        version = params["base_version"]
        if isinstance(version, bool) or not (isinstance(version, int) and 0 < version < 10**9
                                             or isinstance(version, str) and version.isascii()
                                             and version.isdigit() and len(version) < 10):
            raise BadRequest("params.base_version must be a version number such as \"3\" (ASCII digits)")
    if "init_weights" in params:
        value = params["init_weights"]
        if not isinstance(value, str) or not value:
            raise BadRequest("params.init_weights must be a path")
        roots = [settings.model_store_path(), *settings.data_root_paths()]
        if not inside(Path(value).resolve(), roots):
            raise Forbidden(f"params.init_weights {value!r} is outside the model store and the data roots")
