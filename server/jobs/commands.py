"""The command lines of each job kind, and the files they read.

Every job is one or more command lines, the same a user would type (``aiaa train ...``,
``aiaa export ...``), run one after the other in the job's work folder: a fine-tune of an
ensemble is one ``aiaa train --member i`` per network. ``gpus > 1`` runs training under
``torchrun``. What a step writes is read back by :mod:`server.jobs.supervisor` when all
steps succeeded.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from engines.config.model import describe_validation_error, load_json, load_model_config
from engines.errors import ConfigError
from engines.training.trainer import LAST_CHECKPOINT, TrainConfig

__all__ = ["JOB_KINDS", "JOB_PARAMS", "Step", "plan", "train_configs"]

JOB_KINDS = ("train", "finetune", "evaluate", "export")
# Job parameters that are not train-config keys.
JOB_PARAMS = {"deploy", "gpus", "device", "base_version", "format", "precision"}
EXPORT_FORMATS = ("openvino", "onnx", "torchscript", "tensorrt")


@dataclass
class Step:
    """One command line of a job; ``output`` is the folder it writes."""

    argv: list[str]
    output: Path
    member: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def train_configs(kind: str, params: dict[str, Any], model_config_path: Path) -> list[dict[str, Any]]:
    """The train config of every network of the model, validated: the version's own train config
    (when it has one) with the job's ``params`` on top; a fine-tune starts from the version's weights.

    Raises:
        ConfigError: a parameter is not a train-config key or has a bad value.
    """
    config = load_model_config(model_config_path)
    overrides = {k: v for k, v in params.items() if k not in JOB_PARAMS}
    result = []
    for index, member in enumerate(config.members()):
        weights = (model_config_path.parent / str(member.model_path)).resolve()
        saved = weights.parent / "train_config.json"
        base = load_json(saved) if saved.is_file() else {}
        base.pop("init_weights", None)
        base.pop("max_minutes", None)
        merged = {**base, **overrides}
        if kind == "finetune":
            merged["init_weights"] = str(weights)
        merged.setdefault("epochs", 1)
        where = f"job params (network {index + 1})" if config.ensemble else "job params"
        try:
            TrainConfig.model_validate(merged)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(where, exc)) from None
        result.append(merged)
    return result


def _python(gpus: int) -> list[str]:
    if gpus > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}", "-m",
                "server.cli.main"]
    return [sys.executable, "-m", "server.cli.main"]


def plan(kind: str, params: dict[str, Any], datalist: str | None, model_config_path: Path, work: Path,
         resume: bool) -> list[Step]:
    """The steps of a job, writing the train configs they read into ``work``.

    Raises:
        ConfigError: bad parameters for this kind of job.
    """
    progress = ["--progress-file", str(work / "progress.jsonl")]
    device = str(params.get("device", "auto"))
    if kind in ("train", "finetune"):
        gpus = int(params.get("gpus", 1))
        configs = train_configs(kind, params, model_config_path)
        ensemble = len(configs) > 1
        steps = []
        for index, cfg in enumerate(configs, start=1):
            suffix = f"_member{index}" if ensemble else ""
            train_config = work / f"train_config{suffix}.json"
            train_config.write_text(json.dumps(cfg, indent=2))
            output = work / "out" / (f"member{index}" if ensemble else "model")
            argv = [*_python(gpus), "train", "--config", str(model_config_path), "--datalist", str(datalist),
                    "--train-config", str(train_config), "--output", str(output), "--device", device,
                    *progress, "--stop-file", str(work / "STOP")]
            if ensemble:
                argv += ["--member", str(index)]
            if resume and (output / LAST_CHECKPOINT).is_file():
                argv.append("--resume")
            steps.append(Step(argv, output, index if ensemble else None, {"train_config": str(train_config)}))
        return steps
    if kind == "evaluate":
        output = work / "evaluation"
        return [Step([sys.executable, "-m", "server.cli.evaluate_job", "--config", str(model_config_path),
                      "--datalist", str(datalist), "--output", str(output / "report.json"), "--device", device,
                      *progress], output)]
    if kind == "export":
        fmt = params.get("format")
        if fmt not in EXPORT_FORMATS:
            raise ConfigError(f"an export job needs params.format, one of {', '.join(EXPORT_FORMATS)}")
        output = work / "export"
        argv = [sys.executable, "-m", "server.cli.main", "export", "--config", str(model_config_path), "--format", fmt,
                "--output", str(output)]
        if params.get("precision"):
            argv += ["--precision", str(params["precision"])]
        if datalist:
            argv += ["--datalist", str(datalist)]
        return [Step(argv, output)]
    raise ConfigError(f"unknown job kind {kind!r}: use one of {', '.join(JOB_KINDS)}")
