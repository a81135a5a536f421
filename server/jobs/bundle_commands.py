"""The command lines of bundle jobs: train, fine-tune and evaluate a MONAI bundle with ``monai.bundle run``.

A job works on a copy of the bundle in its own folder (``<work>/bundle``), so the bundle it
came from is never written into; the copy's ``models/model.pt`` is what a training leaves
behind (its ``CheckpointSaver`` writes into ``ckpt_dir``), and TensorBoard events and metrics go
to ``<work>/out``. Every setting reaches MONAI through one ``--args_file`` JSON: the job's
datalist as ``train#dataset#data`` / ``validate#dataset#data``, ``epochs`` as
``train#trainer#max_epochs``, the device, and ``params.overrides`` (literal values only, checked
with :func:`engines.config.model.check_overrides`). The few expressions written here are ours,
never a request's. ``gpus: N`` runs the bundle's ``multi_gpu_train`` config under ``torchrun``;
without CUDA, as N CPU processes over gloo.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from engines.config.model import check_overrides
from engines.data.datalist import load_datalist
from engines.errors import ConfigError
from engines.serving.pool import EnginePool
from engines.tasks.bundle import BundleEngine
from engines.tasks.bundle_config import find_config
from server.jobs.commands import Step

__all__ = ["BUNDLE_JOB_KINDS", "BUNDLE_PARAMS", "RESUME_DIR", "bundle_failure", "bundle_folder", "bundle_plan", "bundle_result",
           "check_bundle_job", "checkpoint_epoch", "latest_checkpoint"]

BUNDLE_JOB_KINDS = ("train", "finetune", "evaluate")
# What a bundle job's params may hold (``base_version`` is set by the jobs API itself).
BUNDLE_PARAMS = {"epochs", "gpus", "device", "deploy", "overrides", "base_version"}
_FINETUNE_LOADER = "aiaa_finetune_loader"
_PROGRESS = "aiaa_progress"
_RESUME_SAVER = "aiaa_resume_saver"
_RESUME_LOADER = "aiaa_resume_loader"
RESUME_DIR = "resume"


def _raw(files: list[Path]) -> dict[str, Any]:
    """The bundle's configs merged as MONAI merges them, unparsed (nothing is evaluated)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    return parser.get()


def _device(params: dict[str, Any], gpus: int) -> str:
    device = str(params.get("device", "auto"))
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"params.device must be auto, cpu or cuda, not {device!r}")
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return "$torch.device(f'cuda:{dist.get_rank()}')" if gpus > 1 else "$torch.device('cuda:0')"
    return "$torch.device('cpu')"


def _cpu_distributed(raw: dict[str, Any]) -> dict[str, Any]:
    """The multi-GPU config's initialisation on CPU processes: gloo instead of NCCL, no CUDA device."""
    init = raw.get("initialize")
    if not isinstance(init, list):
        raise ConfigError("the bundle's multi_gpu_train config has no 'initialize' list to adapt to CPU processes")
    steps = [s.replace("backend='nccl'", "backend='gloo'").replace('backend="nccl"', 'backend="gloo"')
             for s in init if not (isinstance(s, str) and "torch.cuda.set_device" in s)]
    return {"initialize": steps, "network#device_ids": None}


def _finetune_loader(weights: Path) -> dict[str, Any]:
    """Loads the serving weights into ``@network`` when the trainer starts."""
    return {"_target_": "CheckpointLoader", "load_path": str(weights), "load_dict": {"model": "@network"},
            "map_location": "cpu"}


def _with_steps(raw: dict[str, Any], args: dict[str, Any], run_id: str, steps: list[str]) -> dict[str, Any]:
    """Our expressions run after the bundle's own initialisation (legacy bundles: before its run list)."""
    init = args.get("initialize", raw.get("initialize"))
    if isinstance(init, list) and run_id == "run":
        return {"initialize": [*init, *steps]}
    return {run_id: [*steps, *raw.get(run_id, [])]}


def _run_id(raw: dict[str, Any], current: str, legacy: str) -> str:
    if current in raw:
        return current
    if legacy in raw:
        return legacy
    raise ConfigError(f"the bundle's config has neither '{current}' nor '{legacy}' to run")


def _require(raw: dict[str, Any], ids: list[str], where: str) -> None:
    for id_ in ids:
        node: Any = raw
        for part in id_.split("#"):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"{where} has no '{id_}': a bundle job needs it to give the job's datalist")
            node = node[part]


def check_bundle_job(kind: str, params: dict[str, Any]) -> None:
    """Refuse a bundle job's kind or params before anything is written (the jobs API answers 400).

    Raises:
        ConfigError: a kind bundles do not run, params this module does not take, non-literal
            overrides, or a bad ``gpus``, ``device`` or ``epochs``.
    """
    if kind not in BUNDLE_JOB_KINDS:
        raise ConfigError(f"bundles run job kinds {', '.join(BUNDLE_JOB_KINDS)}, not {kind!r}")
    unknown = sorted(set(params) - BUNDLE_PARAMS)
    if unknown:
        raise ConfigError(f"bundle jobs take params {', '.join(sorted(BUNDLE_PARAMS))}; not {', '.join(unknown)} "
                          "(other settings go in params.overrides as config ids)")
    overrides = params.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise ConfigError("params.overrides must be an object of config ids and literal values")
    try:
        check_overrides(overrides)
    except ValueError as exc:
        raise ConfigError(f"params.overrides: {exc}") from None
    gpus = params.get("gpus", 1)
    if not isinstance(gpus, int) or gpus < 1:
        raise ConfigError("params.gpus must be a positive integer")
    epochs = params.get("epochs", 1)
    if not isinstance(epochs, int) or epochs < 1:
        raise ConfigError("params.epochs must be a positive integer")
    _device(params, gpus)


def bundle_plan(kind: str, params: dict[str, Any], datalist: str | Path, bundle: Path, work: Path,
                resume: bool = False) -> list[Step]:
    """The one step of a bundle job, writing the bundle copy and the args file it reads into ``work``.

    A training saves its state after every epoch into ``work/resume/``; ``resume`` continues from the
    newest such checkpoint (the epoch after it) on the copy it left, or, when there is none yet,
    starts again from the beginning and says so in the step's ``extra["resume"]``.

    Raises:
        ConfigError: unknown kind, bad params, or a bundle without the configs or ids the job needs.
    """
    check_bundle_job(kind, params)
    overrides = params.get("overrides") or {}
    gpus = int(params.get("gpus", 1))
    bundle = Path(bundle).resolve()
    train = find_config(bundle, "train")
    files = [train]
    if kind == "evaluate":
        files.append(find_config(bundle, "evaluate"))
    elif gpus > 1:
        files.append(find_config(bundle, "multi_gpu_train"))
    data = load_datalist(datalist)

    copy = work / "bundle"
    checkpoint = latest_checkpoint(work) if resume and kind != "evaluate" and copy.is_dir() else None
    if checkpoint is None:  # a fresh start (a resume without a checkpoint too): the bundle copied again
        if copy.exists():
            shutil.rmtree(copy)
        shutil.rmtree(work / RESUME_DIR, ignore_errors=True)
        shutil.copytree(bundle, copy, symlinks=False, ignore=shutil.ignore_patterns("eval", "__pycache__"))
    files = [copy / f.relative_to(bundle) for f in files]
    raw = _raw(files)
    where = f"bundle {bundle.name} ({', '.join(f.name for f in files)})"
    args: dict[str, Any] = {
        "config_file": [str(f) for f in files],
        "meta_file": str(copy / "configs" / "metadata.json"),
        **({"logging_file": str(copy / "configs" / "logging.conf")}
           if (copy / "configs" / "logging.conf").is_file() else {}),
        "bundle_root": str(copy),
        "ckpt_dir": str(copy / "models"),
        "output_dir": str(work / "out"),
        "device": _device(params, gpus),
    }
    if kind == "evaluate":
        _require(raw, ["validate#dataset#data"], where)
        run_id = _run_id(raw, "run", "evaluating")
        args["validate#dataset#data"] = data["validation"]
    else:
        _require(raw, ["train#dataset#data", "validate#dataset#data"], where)
        run_id = _run_id(raw, "run", "training")
        args["train#dataset#data"] = data["training"]
        args["validate#dataset#data"] = data["validation"] or data["training"][-1:]
        if "epochs" in params:
            args["train#trainer#max_epochs"] = int(params["epochs"])
        if gpus > 1 and len(args["validate#dataset#data"]) < gpus:
            raise ConfigError(f"{gpus} processes need at least {gpus} validation cases (each validates a share)")
        if gpus > 1 and not torch.cuda.is_available():
            args.update(_cpu_distributed(raw))
        weights = copy / "models" / "model.pt"
        # What a resume needs (network, trainer state, optimizer, scheduler), saved after every epoch.
        state = {"model": "@network", "trainer": "@train#trainer",
                 **{key: f"@{key}" for key in ("optimizer", "lr_scheduler") if key in raw}}
        args[_RESUME_SAVER] = {"_target_": "CheckpointSaver", "save_dir": str(work / RESUME_DIR), "save_dict": state,
                               "save_interval": 1, "epoch_level": True, "n_saved": 1}
        if checkpoint is not None:  # the copy, its best weights so far and initial_model.pt are kept
            args[_RESUME_LOADER] = {"_target_": "CheckpointLoader", "load_path": str(checkpoint), "load_dict": state,
                                    "map_location": "cpu"}
        elif kind == "finetune":
            if not weights.is_file():
                raise ConfigError(f"{where}: no models/model.pt to fine-tune from")
            # Moved aside, so that models/model.pt exists at the end only if this training saved one.
            start = work / "initial_model.pt"
            weights.replace(start)
            args[_FINETUNE_LOADER] = _finetune_loader(start)
        else:
            weights.unlink(missing_ok=True)
    workflow = "@validate#evaluator" if kind == "evaluate" else "@train#trainer"
    args[_PROGRESS] = {"_target_": "engines.training.bundle_progress.BundleProgress",
                       "progress_file": str(work / "progress.jsonl"), "stop_file": str(work / "STOP")}
    ours = [f"$@{_PROGRESS}.attach({workflow})"]
    if kind != "evaluate":
        ours.append(f"$@{_RESUME_SAVER}.attach(@train#trainer)")
    if checkpoint is not None:
        ours.append(f"$@{_RESUME_LOADER}(@train#trainer)")
    elif kind == "finetune":
        ours.append(f"$@{_FINETUNE_LOADER}(@train#trainer)")
    args.update(_with_steps(raw, args, run_id, ours))
    args.update(overrides)
    args_file = work / "bundle_args.json"
    args_file.write_text(json.dumps(args, indent=2))
    runner = [sys.executable, "-m", "monai.bundle", "run", run_id, "--args_file", str(args_file)]
    if gpus > 1:
        runner = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}", "-m",
                  "monai.bundle", "run", run_id, "--args_file", str(args_file)]
    output = copy if kind != "evaluate" else work / "out"
    extra: dict[str, Any] = {"args_file": str(args_file), "bundle_job": True}
    if resume and kind != "evaluate":
        extra["resume"] = ({"from_epoch": checkpoint_epoch(checkpoint), "checkpoint": str(checkpoint)}
                           if checkpoint is not None else
                           {"restarted": f"no epoch checkpoint in {work / RESUME_DIR}: the training starts again "
                                         "from the beginning"})
    return [Step(runner, output, extra=extra)]


def latest_checkpoint(work: Path) -> Path | None:
    """The newest epoch checkpoint a bundle training left in its job folder (``resume/``), if any."""
    found = [p for p in (work / RESUME_DIR).glob("*.pt") if checkpoint_epoch(p) is not None]
    return max(found, key=lambda p: checkpoint_epoch(p) or 0, default=None)


def checkpoint_epoch(path: Path) -> int | None:
    """The epoch in an epoch checkpoint's name (``checkpoint_epoch=3.pt``), None when it has none."""
    match = re.search(r"epoch=(\d+)\.pt$", path.name)
    return int(match.group(1)) if match else None


def bundle_result(kind: str, work: Path) -> dict[str, Any]:
    """What a finished bundle job produced: the trained bundle copy (the supervisor stores it as a new
    version of the model), or the mean Dice of an evaluation.

    Raises:
        ConfigError: the run left no weights, or no ``val_mean_dice`` (the bundle's MetricsSaver output).
    """
    if kind == "evaluate":
        metrics = work / "out" / "metrics.csv"
        if not metrics.is_file():
            raise ConfigError(f"{metrics} is missing: the bundle's evaluation config saves no metrics (MetricsSaver)")
        # MetricsSaver writes "<name><delimiter><value>" lines; older MONAI used a tab, newer a comma.
        lines = [re.split(r"[\t,]", line.strip(), maxsplit=1) for line in metrics.read_text().splitlines()]
        values = {parts[0]: parts[1] for parts in lines if len(parts) == 2}
        if "val_mean_dice" not in values:
            raise ConfigError(f"{metrics} holds no val_mean_dice (has {', '.join(values) or 'nothing'})")
        return {"mean_dice": float(values["val_mean_dice"]), "metrics": {k: float(v) for k, v in values.items()}}
    weights = work / "bundle" / "models" / "model.pt"
    if not weights.is_file():
        raise ConfigError(f"{weights} is missing: the training saved no checkpoint (CheckpointSaver into ckpt_dir)")
    return {"bundle": str(work / "bundle"), "weights": str(weights)}


def bundle_folder(pool: EnginePool, name: str) -> Path | None:
    """The folder of the bundle that serves model ``name``; ``None`` when it is not a served bundle."""
    record = pool.record(name)
    engine = record.engine if record is not None else None
    return engine.parts.folder if isinstance(engine, BundleEngine) else None


# MONAI's own words when a random crop does not fit a case (RandCropByPosNegLabeld and the like).
_CROP_TOO_LARGE = re.compile(r"proposed random crop ROI is larger than the image size, got ROI size \(([^)]*)\) "
                             r"and label image size (?:torch\.Size\()?\[?([^\])]*)")
_TRANSFORM = re.compile(r"applying transform <[\w.]*?\.(\w+) object")
# A crop that shrinks to a smaller case (RandSpatialCropd) fails later, when the batch is stacked.
_UNEQUAL_BATCH = re.compile(r"stack expects each tensor to be equal size, but got \[([^\]]*)\] at entry \d+ and "
                            r"\[([^\]]*)\]")


def bundle_failure(work: Path) -> str | None:
    """Our own message for a bundle job that failed on a training crop larger than the data, else None.

    MONAI reports it deep in a traceback; this names the crop, the case's size after the bundle's
    pre-processing, the config id to override and what to do about it.
    """
    try:
        text = (work / "job.log").read_text(errors="replace")
    except OSError:
        return None
    found = _CROP_TOO_LARGE.search(text)
    if found is not None:
        crop, size = (_sizes(g) for g in found.groups())
        transforms = _TRANSFORM.findall(text[: found.start()])
        name = transforms[-1] if transforms else "the random crop"
        return (f"the training crop {crop} ({name}) is larger than a training case, {size} after the bundle's "
                f"pre-processing{_crop_id(work, name)}: give a smaller crop in params.overrides, or pad the cases "
                "(SpatialPadd) before the crop")
    found = _UNEQUAL_BATCH.search(text)
    if found is not None:
        first, second = (_sizes(g) for g in found.groups())
        return (f"cases of different sizes reached one batch ({first} and {second}): a random crop larger than some "
                "cases shrinks to them; give a crop no larger than the smallest case after pre-processing in "
                "params.overrides, or pad the cases (SpatialPadd) before the crop")
    return None


def _sizes(text: str) -> list[int]:
    return [int(v) for v in re.findall(r"\d+", text)]


def _crop_id(work: Path, transform: str) -> str:
    """`` (config id 'train#random_transforms#0')``: where the crop is, from the job's args file."""
    try:
        files = json.loads((work / "bundle_args.json").read_text())["config_file"]
        raw = _raw([Path(f) for f in files])
    except (OSError, ValueError, KeyError):
        return ""
    found = _find_target(raw, transform, "")
    return f" (config id '{found}')" if found else ""


def _find_target(node: Any, name: str, path: str) -> str | None:
    """The id of the first component whose ``_target_`` is ``name`` (a class name), depth first."""
    if isinstance(node, dict):
        target = node.get("_target_")
        if isinstance(target, str) and target.rsplit(".", 1)[-1] == name:
            return path
        items: Any = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return None
    for key, value in items:
        found = _find_target(value, name, f"{path}#{key}" if path else str(key))
        if found is not None:
            return found
    return None
