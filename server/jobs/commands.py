"""The job kinds (the one registry of them) and the command lines each runs.

Every job is one or more command lines, the same a user would type (``aiaa train ...``,
``aiaa export ...``), run one after the other in the job's work folder: a fine-tune of an
ensemble is one ``aiaa train --member i`` per network. ``gpus > 1`` runs training under
``torchrun``. What a step writes is read back by :mod:`server.jobs.supervisor` when all
steps succeeded.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from engines.config.model import describe_validation_error, load_json, load_model_config
from engines.data.datalist import resolve_dataset_refs
from engines.errors import ConfigError
from engines.training.interactive import InteractiveTrainConfig
from engines.training.trainer import LAST_CHECKPOINT, TrainConfig

__all__ = ["JOB_KINDS", "JobKind", "Step", "check_params", "is_interactive_model", "job_kind", "own_datalists", "plan",
           "served_export", "train_configs", "trained_config"]

# Parameters every kind takes, whatever it runs.
COMMON_PARAMS = frozenset({"deploy", "device", "base_version"})
# Training parameters that are not train-config keys.
TRAIN_PARAMS = COMMON_PARAMS | {"gpus", "max_dice_drop", "replay", "others_max_objects"}
# Objects per datalist on which a fine-tune of an interactive model is checked on the version's own datalists.
OTHERS_MAX_OBJECTS = 10
EVALUATE_PARAMS = COMMON_PARAMS | {"split", "perturbation", "seed"}
# An interactive (deepgrow) model is evaluated by the interactive protocol: its ``aiaa evaluate --interactive`` options.
INTERACTIVE_EVALUATE_OPTIONS = {"variants": "--variants", "clicks": "--clicks", "max_objects": "--max-objects",
                                "structures": "--structures"}
INTERACTIVE_EVALUATE_PARAMS = COMMON_PARAMS | set(INTERACTIVE_EVALUATE_OPTIONS)
# ``aiaa export`` options an export job passes on (``--max-cases`` ...), besides format and precision.
EXPORT_OPTIONS = {"max_cases": "--max-cases", "repeats": "--repeats", "max_batch": "--max-batch",
                  "workspace_mb": "--workspace-mb", "opset": "--opset", "min_shape": "--min-shape",
                  "opt_shape": "--opt-shape", "max_shape": "--max-shape"}
EXPORT_PARAMS = COMMON_PARAMS | {"format", "precision"} | set(EXPORT_OPTIONS)


@dataclass
class Step:
    """One command line of a job; ``output`` is the folder it writes."""

    argv: list[str]
    output: Path
    member: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def train_configs(kind: str, params: dict[str, Any], model_config_path: Path,
                  datalist: str | None = None) -> list[dict[str, Any]]:
    """The train config of every network of the model, validated: the version's own train config
    (when it has one) with the job's ``params`` on top; a fine-tune starts from the version's weights.

    An interactive model trains on the job's ``datalist``; with ``params.replay`` (a share from 0 to 1)
    that share of its samples comes from the datalists the version was trained on (:func:`own_datalists`),
    so a fine-tune on one structure does not make it forget the others.

    Raises:
        ConfigError: a parameter is not a train-config key or has a bad value.
    """
    config = load_model_config(model_config_path)
    interactive = config.type == "deepgrow"
    overrides = {k: v for k, v in params.items() if k not in TRAIN_PARAMS}
    replay = float(params.get("replay") or 0.0)
    result = []
    for index, member in enumerate(config.members()):
        weights = (model_config_path.parent / str(member.model_path)).resolve()
        saved = weights.parent / "train_config.json"
        base = load_json(saved) if saved.is_file() else {}
        own = _dataset_refs(base, saved.parent)
        base.pop("init_weights", None)
        base.pop("max_minutes", None)
        if interactive:  # the job's datalist replaces the datalists it was trained on
            for key in ("max_steps", "datasets", "exclude_datasets"):
                base.pop(key, None)
        merged = {**base, **overrides}
        if kind == "finetune":
            merged["init_weights"] = str(weights)
        if replay and datalist is not None:
            merged["datasets"] = _replay_datasets(own, datalist, replay)
        where = f"job params (network {index + 1})" if config.ensemble else "job params"
        if interactive:
            merged["interactive"] = True
            _validate(InteractiveTrainConfig, merged, where)
            if merged.get("max_minutes") is None and merged.get("max_steps") is None:
                raise ConfigError(f"{where}: an interactive training needs params.max_minutes or params.max_steps")
        else:
            merged.setdefault("epochs", 1)
            _validate(TrainConfig, merged, where)
        result.append(merged)
    return result


def own_datalists(model_config_path: Path) -> list[dict[str, Any]]:
    """The interactive datalists a version was trained on (``datasets`` of the ``train_config.json`` beside its
    weights), as ``{"datalist": absolute path, "weight": w}``; empty when it has none."""
    config = load_model_config(model_config_path)
    weights = (model_config_path.parent / str(config.members()[0].model_path)).resolve()
    saved = weights.parent / "train_config.json"
    return _dataset_refs(load_json(saved), saved.parent) if saved.is_file() else []


def _dataset_refs(train_config: dict[str, Any], folder: Path) -> list[dict[str, Any]]:
    """The well-formed ``datasets`` of a train config read from ``folder``, datalist paths absolute."""
    return [{"datalist": d["datalist"], "weight": float(d.get("weight", 1.0))}
            for d in resolve_dataset_refs(train_config.get("datasets"), folder)
            if isinstance(d, dict) and isinstance(d.get("datalist"), str)]


def _replay_datasets(own: list[dict[str, Any]], datalist: str, replay: float) -> list[dict[str, Any]]:
    """The job's datalist and the version's own datalists, weighted so that ``replay`` of the samples are the latter."""
    total = sum(d["weight"] for d in own)
    return [*own, {"datalist": str(Path(datalist).resolve()), "weight": total * (1.0 - replay) / replay}]


def _checked_datalists(model_config_path: Path) -> list[str]:
    """The version's own datalists that have validation cases: where a fine-tune is also checked."""
    return [d["datalist"] for d in own_datalists(model_config_path)
            if Path(d["datalist"]).is_file() and load_json(d["datalist"]).get("validation")]


def _validate(schema: type, values: dict[str, Any], where: str) -> None:
    try:
        schema.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(where, exc)) from None


def _python(gpus: int = 1) -> list[str]:
    if gpus > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}", "-m",
                "server.cli.main"]
    return [sys.executable, "-m", "server.cli.main"]


def _progress(work: Path) -> list[str]:
    # Every worker writes its progress (and a heartbeat) here; the supervisor reads it.
    return ["--progress-file", str(work / "progress.jsonl")]


def _check_keys(kind: str, params: dict[str, Any], allowed: set[str] | frozenset[str]) -> None:
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown {kind} job parameter(s) {', '.join(map(repr, unknown))}: "
                          f"use {', '.join(sorted(allowed))}")


def _check_training(kind: str, params: dict[str, Any], model_config_path: Path) -> None:
    replay, others = params.get("replay"), params.get("others_max_objects")
    if (replay is not None or others is not None) and not is_interactive_model(model_config_path):
        raise ConfigError("params.replay and params.others_max_objects apply to interactive (deepgrow) models")
    if replay is not None:
        if not isinstance(replay, (int, float)) or isinstance(replay, bool) or not 0 <= replay < 1:
            raise ConfigError("params.replay must be a number from 0 to below 1 (the share of samples from the "
                              "datalists the version was trained on)")
        if replay and not own_datalists(model_config_path):
            raise ConfigError("params.replay: this version lists no datalists it was trained on (no 'datasets' in "
                              "the train_config.json beside its weights)")
    if others is not None and (not isinstance(others, int) or isinstance(others, bool) or others < 1):
        raise ConfigError("params.others_max_objects must be an integer of at least 1")
    train_configs(kind, params, model_config_path)
    drop = params.get("max_dice_drop")
    if drop is not None and (not isinstance(drop, (int, float)) or isinstance(drop, bool) or not 0 <= drop <= 1):
        raise ConfigError("params.max_dice_drop must be a number from 0 to 1")
    gpus = params.get("gpus", 1)
    if not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 1:
        raise ConfigError("params.gpus must be a positive integer")


def is_interactive_model(model_config_path: Path) -> bool:
    """Whether a model is interactive (``"type": "deepgrow"``): evaluated by the interactive protocol."""
    return load_model_config(model_config_path).type == "deepgrow"


def _check_evaluate(kind: str, params: dict[str, Any], model_config_path: Path) -> None:
    _check_keys(kind, params, EVALUATE_PARAMS | INTERACTIVE_EVALUATE_PARAMS)  # before reading the model config
    if not is_interactive_model(model_config_path):
        _check_keys(kind, params, EVALUATE_PARAMS)
        return
    _check_keys(f"interactive {kind}", params, INTERACTIVE_EVALUATE_PARAMS)
    for key, least in (("clicks", 0), ("max_objects", 1)):
        value = params.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < least):
            raise ConfigError(f"params.{key} must be an integer of at least {least}, not {value!r}")
    from engines.evaluation.interactive import VARIANTS

    for key, allowed in (("variants", VARIANTS), ("structures", None)):
        value = params.get(key)
        if value is not None and (not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value)
                                  or (allowed is not None and not set(value) <= set(allowed))):
            raise ConfigError(f"params.{key} must be a non-empty list of "
                              + (f"{', '.join(allowed)}" if allowed is not None else "structure names")
                              + f", not {value!r}")


def _check_export(kind: str, params: dict[str, Any], model_config_path: Path) -> None:
    from engines.export.exporter import ExportOptions

    _check_keys(kind, params, EXPORT_PARAMS)
    if "format" not in params:
        raise ConfigError(f"an export job needs params.format, one of {', '.join(export_formats())}")
    for key in ("max_cases", "repeats", "max_batch", "workspace_mb", "opset"):
        value = params.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigError(f"params.{key} must be a positive integer, not {value!r}")
    try:
        ExportOptions(format=str(params["format"]), precision=str(params.get("precision", "fp32")),
                      max_cases=params.get("max_cases"), repeats=int(params.get("repeats", 20))).validate()
    except ConfigError as exc:
        raise ConfigError(f"params.format / params.precision: {exc}") from None


def export_formats() -> tuple[str, ...]:
    """The export formats (from the one registry of them)."""
    from engines.backends.formats import FORMATS

    return tuple(FORMATS)


def _plan_training(kind: str, params: dict[str, Any], datalist: str | None, model_config_path: Path, work: Path,
                   resume: bool) -> list[Step]:
    device = str(params.get("device", "auto"))
    gpus = int(params.get("gpus", 1))
    configs = train_configs(kind, params, model_config_path, datalist)
    ensemble = len(configs) > 1
    steps = []
    for index, cfg in enumerate(configs, start=1):
        suffix = f"_member{index}" if ensemble else ""
        train_config = work / f"train_config{suffix}.json"
        train_config.write_text(json.dumps(cfg, indent=2))
        output = work / "out" / (f"member{index}" if ensemble else "model")
        # With replay the train config lists the datalists (a --datalist would replace them).
        source = [] if cfg.get("datasets") else ["--datalist", str(datalist)]
        argv = [*_python(gpus), "train", "--config", str(model_config_path), *source,
                "--train-config", str(train_config), "--output", str(output), "--device", device,
                *_progress(work), "--stop-file", str(work / "STOP")]
        if ensemble:
            argv += ["--member", str(index)]
        if resume and (output / LAST_CHECKPOINT).is_file():
            argv.append("--resume")
        steps.append(Step(argv, output, index if ensemble else None,
                          {"role": "train", "train_config": str(train_config)}))
    return steps + _plan_checks(params, datalist, model_config_path, work, steps)


def trained_config(model_config_path: Path, outputs: list[Path], work: Path) -> Path:
    """Write the model config of a training's result (the base's config, weights from ``outputs``) into
    ``work``; the checks after a training (evaluation, export) run the new weights through it."""
    config = load_model_config(model_config_path)
    data = config.model_dump(mode="json", exclude_none=True)
    for index, (member, output) in enumerate(zip(config.members(), outputs)):
        weights = str(output / Path(str(member.model_path)).name)
        if config.ensemble:
            data["ensemble"][index]["model_path"] = weights
        else:
            data["model_path"] = weights
    data.update(model_format="pytorch", exports=[])
    if config.datalist:
        data["datalist"] = str((model_config_path.parent / config.datalist).resolve())
    path = work / "trained_model_config.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def served_export(model_config_path: Path) -> tuple[str, str] | None:
    """``(format, precision)`` of the verified export a version serves here, or None (its checkpoint)."""
    from engines.backends.base import select_device
    from engines.backends.selection import choose_export
    from engines.errors import EngineError
    from engines.hardware import detect

    config = load_model_config(model_config_path)
    if config.model_format != "auto":
        return None
    try:
        chosen = choose_export(config, model_config_path.parent, detect(), select_device(config.device).type)
    except EngineError:
        return None
    return (chosen.format, chosen.precision) if chosen is not None else None


def _plan_checks(params: dict[str, Any], datalist: str | None, model_config_path: Path, work: Path,
                 trained: list[Step]) -> list[Step]:
    """After a training: the new weights and the base version through ``aiaa evaluate`` on the job's
    validation cases (the quality gate compares them; for an interactive model also on the first
    ``others_max_objects`` validation objects of each datalist the version was trained on), and the new weights through the same verified
    export the base version serves (so the new version serves as fast as the old one)."""
    config = trained_config(model_config_path, [s.output for s in trained], work)
    device = str(params.get("device", "auto"))
    steps = []
    interactive = is_interactive_model(model_config_path)
    for role, model in (("evaluate_base", model_config_path), ("evaluate_new", config)):
        output = work / role
        argv = _evaluate_argv(model, datalist, output, work, interactive)
        steps.append(Step(argv if interactive else [*argv, "--device", device], output, None, {"role": role}))
    others = _checked_datalists(model_config_path) if interactive else []
    if others:  # and on what the version was trained on: a fine-tune must not forget it
        limit = ["--max-objects", str(params.get("others_max_objects", OTHERS_MAX_OBJECTS))]
        for role, model in (("evaluate_base_others", model_config_path), ("evaluate_new_others", config)):
            output = work / role
            argv = [*_evaluate_argv(model, others[0], output, work, interactive),
                    *[a for d in others[1:] for a in ("--datalist", d)], *limit]
            steps.append(Step(argv, output, None, {"role": role}))
    export = served_export(model_config_path)
    if export is not None:
        fmt, precision = export
        output = work / "export"
        steps.append(Step([*_python(), "export", "--config", str(config), "--format", fmt, "--precision", precision,
                           "--datalist", str(datalist), "--output", str(output), *_progress(work)], output, None,
                          {"role": "export"}))
    return steps


def _evaluate_argv(model_config_path: Path, datalist: str | None, output: Path, work: Path,
                   interactive: bool) -> list[str]:
    """``aiaa evaluate`` of a model on a datalist; ``--interactive`` (the interactive protocol) for a deepgrow model."""
    return [*_python(), "evaluate", "--config", str(model_config_path), *(["--interactive"] if interactive else []),
            "--datalist", str(datalist), "--output", str(output), *_progress(work)]


def _plan_evaluate(kind: str, params: dict[str, Any], datalist: str | None, model_config_path: Path, work: Path,
                   resume: bool) -> list[Step]:
    """``aiaa evaluate``, exactly as a user runs it: one pipeline and one report for both (``--interactive``,
    the interactive protocol, for a deepgrow model)."""
    output = work / "evaluation"
    if is_interactive_model(model_config_path):
        argv = _evaluate_argv(model_config_path, datalist, output, work, interactive=True)
        for key, flag in INTERACTIVE_EVALUATE_OPTIONS.items():
            if key in params:
                value = params[key]
                argv += [flag, *map(str, value)] if isinstance(value, list) else [flag, str(value)]
        return [Step(argv, output)]
    argv = [*_evaluate_argv(model_config_path, datalist, output, work, interactive=False),
            "--device", str(params.get("device", "auto"))]
    for key, flag in (("split", "--split"), ("perturbation", "--perturbation"), ("seed", "--seed")):
        if key in params:
            argv += [flag, str(params[key])]
    return [Step(argv, output)]


def _plan_export(kind: str, params: dict[str, Any], datalist: str | None, model_config_path: Path, work: Path,
                 resume: bool) -> list[Step]:
    output = work / "export"
    argv = [*_python(), "export", "--config", str(model_config_path), "--format", str(params["format"]),
            "--output", str(output), *_progress(work)]
    if params.get("precision"):
        argv += ["--precision", str(params["precision"])]
    for key, flag in EXPORT_OPTIONS.items():
        value = params.get(key)
        if value is not None:
            argv += [flag, "x".join(str(v) for v in value) if isinstance(value, list) else str(value)]
    if datalist:
        argv += ["--datalist", str(datalist)]
    return [Step(argv, output)]


@dataclass(frozen=True)
class JobKind:
    """One kind of job: how its parameters are checked, the command lines it runs, and what it produces.

    ``produces`` names what the supervisor makes of a finished job: ``version`` (new weights, a new
    version), ``report`` (an evaluation report) or ``export`` (a new version with a verified export).
    """

    name: str
    check: Callable[[str, dict[str, Any], Path], None]
    plan: Callable[..., list[Step]]
    produces: str
    needs_datalist: bool = True
    resumable: bool = False


# The one registry of job kinds: a new kind is a planner and one line here.
JOB_KINDS: dict[str, JobKind] = {kind.name: kind for kind in (
    JobKind("train", _check_training, _plan_training, "version", resumable=True),
    JobKind("finetune", _check_training, _plan_training, "version", resumable=True),
    JobKind("evaluate", _check_evaluate, _plan_evaluate, "report"),
    JobKind("export", _check_export, _plan_export, "export", needs_datalist=False),
)}


def job_kind(kind: str) -> JobKind:
    """The registered job kind called ``kind``.

    Raises:
        ConfigError: no such kind.
    """
    try:
        return JOB_KINDS[kind]
    except KeyError:
        raise ConfigError(f"unknown job kind {kind!r}: use one of {', '.join(JOB_KINDS)}") from None


def check_params(kind: str, params: dict[str, Any], model_config_path: Path) -> None:
    """Refuse parameters the kind does not take, or with bad values, before the job is queued.

    Raises:
        ConfigError: the first problem found, naming the parameter.
    """
    job_kind(kind).check(kind, params, model_config_path)


def plan(kind: str, params: dict[str, Any], datalist: str | None, model_config_path: Path, work: Path,
         resume: bool) -> list[Step]:
    """The steps of a job, writing the train configs they read into ``work``.

    Raises:
        ConfigError: bad parameters for this kind of job.
    """
    job = job_kind(kind)
    job.check(kind, params, model_config_path)
    return job.plan(kind, params, datalist, model_config_path, work, resume)
