"""``aiaa export``: a model's networks to an optimized runtime, with a parity and speed report.

Like Clara's ``tlt-export``, but every export proves itself: each network is converted
(one artifact per ensemble member), then the artifact and the PyTorch checkpoint run the
model's own engine (pre-processing, network, post-processing) on real validation volumes.
The report (``export_report.json``) holds, per network, the largest logit difference, the
smallest mask Dice against PyTorch over the cases, and both latencies (medians after
warm-up, timed alternately in the same run); for the whole model, the validation Dice of
both against the labels. fp32 must reach mask Dice 0.999 on every case, reduced precision
0.99, else the report says ``passed: false`` and nothing serves the artifacts.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engines.backends import MeanEnsemble, TorchBackend, load_artifact, select_device
from engines.backends.base import require
from engines.backends.formats import FORMATS, export_format
from engines.backends.selection import file_sha256
from engines.backends.tensorrt import ShapeProfile, build_serialized_engine
from engines.config.model import ModelConfig, load_model_config
from engines.data.datalist import load_datalist
from engines.data.io import read_modalities, read_volume, write_atomically
from engines.errors import ConfigError
from engines.evaluation.scoring import dice_per_label
from engines.hardware import detect
from engines.tasks.registry import engine_for_type
from engines.transforms.points import simulated_params

__all__ = ["DEFAULT_ROOT", "FORMATS", "PARITY_THRESHOLDS", "ExportOptions", "default_output_dir", "export_model", "summary_line",
           "time_alternately", "write_artifact"]

log = logging.getLogger(__name__)

PARITY_THRESHOLDS = {"fp32": 0.999, "fp16": 0.99, "bf16": 0.99, "int8": 0.99}
# Default output root: never beside the weights, which may be committed, shipped and served.
DEFAULT_ROOT = Path("runs") / "exports"


@dataclass
class ExportOptions:
    """The ``aiaa export`` flags."""

    format: str
    precision: str = "fp32"
    min_shape: tuple[int, ...] | None = None
    opt_shape: tuple[int, ...] | None = None
    max_shape: tuple[int, ...] | None = None
    max_batch: int | None = None
    workspace_mb: int = 1024
    opset: int = 18
    max_cases: int | None = None
    repeats: int = 20

    def validate(self) -> None:
        """Refuse combinations no runtime here can build."""
        spec = export_format(self.format)
        if self.precision not in PARITY_THRESHOLDS:
            raise ConfigError(f"unknown precision '{self.precision}': choose fp32, fp16, bf16 or int8")
        if self.precision not in spec.precisions:
            raise ConfigError(f"{self.format} exports are built at {', '.join(spec.precisions)} here, "
                              f"not {self.precision}")
        if self.repeats < 1 or (self.max_cases is not None and self.max_cases < 1):
            raise ConfigError("repeats and max cases must be at least 1")


class ActivationRecorder:
    """Wraps a backend and keeps every input and output it sees (for parity and timing)."""

    def __init__(self, backend: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.backend = backend
        self.inputs: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.backend(x)
        self.inputs.append(x.detach().cpu().clone())
        self.outputs.append(out.detach().float().cpu().clone())
        return out


def default_output_dir(config_path: Path, fmt: str, precision: str) -> Path:
    """``runs/exports/<model config name>/<format>_<precision>`` (relative to the working folder).

    Never the weights' own folder: that may hold committed, served artifacts an example run
    must not overwrite. Serving an export is a choice (``exports`` in a model config, or an
    export job), not a side effect of running the command.
    """
    return DEFAULT_ROOT / Path(config_path).stem / f"{fmt}_{precision}"


def _cases(config: ModelConfig, config_dir: Path, datalist: str | Path | None, max_cases: int | None) -> list[dict]:
    source = Path(datalist) if datalist else (config_dir / config.datalist if config.datalist else None)
    if source is None:
        raise ConfigError("parity is measured on validation volumes: give --datalist (or 'datalist' in the model "
                          "config)")
    cases = load_datalist(source)["validation"][:max_cases]
    if not cases:
        raise ConfigError(f"{source}: no validation cases to measure parity on")
    return cases


def input_profile(inputs: list[torch.Tensor], options: ExportOptions) -> ShapeProfile:
    """The min/opt/max input shapes an export is built for: the options' own, else those the inputs show."""
    shapes = [tuple(x.shape) for x in inputs]
    opt = options.opt_shape or max(set(shapes), key=shapes.count)
    low = options.min_shape or tuple(min(s[i] for s in shapes) for i in range(len(opt)))
    high = options.max_shape or tuple(max(s[i] for s in shapes) for i in range(len(opt)))
    if len(low) == len(opt) and options.min_shape is None:
        low = (1, *low[1:])
    return ShapeProfile.build(opt, low, high, max_batch=options.max_batch or max(s[0] for s in shapes))


def _dim_specs(profile: ShapeProfile) -> dict[int, Any]:
    return {axis: torch.export.Dim(f"d{axis}", min=profile.min[axis], max=profile.max[axis])
            for axis in profile.dynamic_axes}


def _fp16_exact(module: torch.nn.Module) -> bool:
    """Whether every weight survives a round trip through fp16 (then storing fp16 loses nothing)."""
    return all(torch.equal(p.half().float(), p) for p in module.state_dict().values() if p.is_floating_point())


def _write_onnx(module: torch.nn.Module, example: torch.Tensor, profile: ShapeProfile, path: Path, opset: int,
                half: bool = False) -> None:
    require("onnx")
    require("onnxscript")
    if half:
        module, example = module.half(), example.half()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ("torch.onnx", "onnx_ir", "onnxscript"):
            logging.getLogger(name).setLevel(logging.ERROR)
        torch.onnx.export(module, (example,), str(path), dynamo=True, opset_version=opset, verbose=False,
                          input_names=["input"], output_names=["output"], external_data=False,
                          dynamic_shapes=(_dim_specs(profile),) if profile.dynamic_axes else None)
    if half:
        module.float()
    import onnx

    onnx.checker.check_model(onnx.load(str(path)))


def _write_openvino(module: torch.nn.Module, example: torch.Tensor, profile: ShapeProfile, path: Path) -> None:
    ov = require("openvino")
    dims = [-1 if axis in profile.dynamic_axes else size for axis, size in enumerate(profile.opt)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ov.convert_model(module, example_input=example, input=[ov.PartialShape(dims)])
    ov.save_model(model, str(path), compress_to_fp16=_fp16_exact(module))


def _write_torchscript(module: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, example, check_trace=False)
    traced.save(str(path))


def write_artifact(options: ExportOptions, module: torch.nn.Module, example: torch.Tensor, profile: ShapeProfile,
                   folder: Path, stem: str) -> Path:
    """Convert one network; returns the artifact to serve."""
    path = folder / f"{stem}{export_format(options.format).suffix}"
    if options.format == "openvino":
        _write_openvino(module, example, profile, path)
    elif options.format == "onnx":
        _write_onnx(module, example, profile, path, options.opset, half=options.precision == "fp16")
    elif options.format == "torchscript":
        _write_torchscript(module, example, path)
    else:  # tensorrt: the ONNX graph TensorRT consumes, then the engine where TensorRT and a GPU exist
        trt = require("tensorrt")
        fp16_graph = options.precision == "fp16" and not hasattr(trt.BuilderFlag, "FP16")
        graph = folder / f"{stem}.onnx"
        _write_onnx(module, example, profile, graph, options.opset, half=fp16_graph)
        path.write_bytes(build_serialized_engine(graph, options.precision, profile, options.workspace_mb))
    return path


def _elapsed_ms(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000.0


def time_alternately(reference: Callable, artifact: Callable, example: torch.Tensor, repeats: int) -> tuple[float, float]:
    """Median milliseconds of both, warmed up and timed alternately so they share the machine's state."""
    for _ in range(3):
        reference(example)
        artifact(example)
    ref, art = [], []
    for _ in range(repeats):
        ref.append(_elapsed_ms(lambda: reference(example)))
        art.append(_elapsed_ms(lambda: artifact(example)))
    return round(statistics.median(ref), 2), round(statistics.median(art), 2)


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries an export report names."""
    import importlib.metadata as md

    out = {}
    for package in ("torch", "monai", "onnx", "onnxruntime", "onnxscript", "openvino", "tensorrt"):
        try:
            out[package] = md.version(package)
        except md.PackageNotFoundError:
            continue
    return out


def _run_cases(engine_cls: type, name: str, config: ModelConfig, backend: Callable, cases: list[tuple]) -> list:
    engine = engine_cls(name, config, backend)
    return [engine.infer(volume, params).mask for volume, _, params in cases]


def mask_dice(a: np.ndarray, b: np.ndarray, n_labels: int) -> float:
    """Lowest per-label Dice between two runs' masks (1 for a label empty in both)."""
    # Agreement of two runs, not a score: a label empty in both agrees perfectly.
    return min(1.0 if math.isnan(d) else d for d in dice_per_label(a, b, n_labels))


def write_report(folder: Path, report: dict[str, Any]) -> None:
    """Write ``export_report.json`` into ``folder`` atomically."""
    text = json.dumps(report, indent=2)
    write_atomically(folder / "export_report.json", lambda tmp: Path(tmp).write_text(text))


def export_model(config_path: str | Path, options: ExportOptions, datalist: str | Path | None = None,
                 output: str | Path | None = None, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Export every network of a model config and measure parity and speed; returns the report.

    The report is written to ``<output>/export_report.json`` in every case that gets as
    far as converting; ``passed`` says whether the artifacts may be served.

    Raises:
        ConfigError: bad options, a config without a PyTorch checkpoint, no validation data.
        BackendUnavailableError: the runtime's extra (or the GPU TensorRT needs) is missing.
    """
    options.validate()
    config_path = Path(config_path)
    config = load_model_config(config_path)
    config_dir = config_path.parent
    if config.model_format not in ("pytorch", "auto"):
        raise ConfigError(f"{config_path}: export starts from a PyTorch checkpoint; this config serves "
                          f"'{config.model_format}'")
    if options.format == "tensorrt":
        require("tensorrt")
    # Reduced-precision TorchScript and TensorRT are GPU artifacts; everything else is measured on the CPU.
    on_gpu = options.format == "tensorrt" or (options.format == "torchscript" and options.precision != "fp32")
    device = select_device("cuda" if on_gpu else "cpu")
    folder = Path(output) if output else default_output_dir(config_path, options.format, options.precision)
    engine_cls = engine_for_type(config.type)
    cases = []
    for case in _cases(config, config_dir, datalist, options.max_cases):
        truth = np.rint(read_volume(case["label"]).array).astype(np.uint8)
        if config.type == "annotation":
            truth = (truth > 0).astype(np.uint8)
        cases.append((read_modalities(case["image"]), truth, simulated_params(config.type, truth)))
    folder.mkdir(parents=True, exist_ok=True)  # only once there is something to export
    progress(f"exporting {config_path.stem} to {options.format} {options.precision}: {len(config.members())} "
             f"network(s), parity on {len(cases)} validation case(s)")

    members_report: list[dict[str, Any]] = []
    references: list[Any] = []
    artifacts: list[Any] = []
    try:
        return _measure(config_path, config, config_dir, options, device, folder, engine_cls, cases, members_report,
                        references, artifacts, progress)
    finally:  # a failed export must not keep its runtimes (and their memory) alive
        for backend in (*references, *artifacts):
            backend.close()


def _measure(config_path: Path, config: ModelConfig, config_dir: Path, options: ExportOptions, device: torch.device,
             folder: Path, engine_cls: type, cases: list[tuple], members_report: list[dict[str, Any]],
             references: list[Any], artifacts: list[Any], progress: Callable[[str], None]) -> dict[str, Any]:
    """Convert, run and time every network; ``references`` and ``artifacts`` collect what to close."""
    n_labels = len(config.labels)
    profile = None
    for index, member in enumerate(config.members(), start=1):
        reference = TorchBackend.from_checkpoint((config_dir / str(member.model_path)).resolve(), member, device)
        references.append(reference)
        recorder = ActivationRecorder(reference)
        ref_masks = _run_cases(engine_cls, config_path.stem, member, recorder, cases)
        profile = input_profile(recorder.inputs, options)
        example = recorder.inputs[0].to(device)
        artifact_path = write_artifact(options, reference.module, example, profile, folder, f"member{index}")
        artifact = load_artifact(options.format, artifact_path, device, options.precision,
                                 report={"options": {"min_shape": profile.min, "opt_shape": profile.opt,
                                                     "max_shape": profile.max, "workspace_mb": options.workspace_mb}})
        artifacts.append(artifact)
        art_recorder = ActivationRecorder(artifact)
        art_masks = _run_cases(engine_cls, config_path.stem, member, art_recorder, cases)
        diffs = [float((a - b).abs().max()) for a, b in zip(art_recorder.outputs, recorder.outputs)]
        dices = [mask_dice(a, b, n_labels) for a, b in zip(art_masks, ref_masks)]
        ref_ms, art_ms = time_alternately(reference, artifact, example, options.repeats)
        weights = (config_dir / str(member.model_path)).resolve()
        members_report.append({
            "artifact": artifact_path.name, "network": member.network.name if member.network else None,
            "weights": str(member.model_path), "weights_sha256": file_sha256(weights),
            "input_shape": list(example.shape),
            "max_abs_diff": round(max(diffs), 6), "mask_dice_min": round(min(dices), 5),
            "mask_dice_mean": round(float(np.mean(dices)), 5), "latency_ms": art_ms, "pytorch_latency_ms": ref_ms,
            "speedup": round(ref_ms / art_ms, 2) if art_ms else None,
        })
        progress(f"  member {index} ({members_report[-1]['network']}): mask Dice min {min(dices):.5f}, max |logit "
                 f"diff| {max(diffs):.2e}, {art_ms} ms vs PyTorch {ref_ms} ms")

    if len(references) == 1:
        model_ref, model_art = references[0], artifacts[0]
    else:
        model_ref, model_art = MeanEnsemble(references), MeanEnsemble(artifacts)
    ref_masks = _run_cases(engine_cls, config_path.stem, config, model_ref, cases)
    art_masks = _run_cases(engine_cls, config_path.stem, config, model_art, cases)
    model_dices = [mask_dice(a, b, n_labels) for a, b in zip(art_masks, ref_masks)]
    dice_ref = float(np.nanmean([dice_per_label(m, c[1], n_labels) for m, c in zip(ref_masks, cases)]))
    dice_art = float(np.nanmean([dice_per_label(m, c[1], n_labels) for m, c in zip(art_masks, cases)]))
    threshold = PARITY_THRESHOLDS[options.precision]
    failures = [f"member {i}: mask Dice {m['mask_dice_min']} < {threshold}"
                for i, m in enumerate(members_report, start=1) if m["mask_dice_min"] < threshold]
    if min(model_dices) < threshold:
        failures.append(f"model: mask Dice {min(model_dices):.5f} < {threshold}")
    pytorch_ms = sum(m["pytorch_latency_ms"] for m in members_report)
    artifact_ms = sum(m["latency_ms"] for m in members_report)
    report = {
        "model": config_path.stem,
        "config": str(config_path),
        "format": options.format,
        "precision": options.precision,
        "device": device.type,
        "passed": not failures,
        "failures": failures,
        "parity_threshold": threshold,
        "speedup_vs_pytorch": round(pytorch_ms / artifact_ms, 2) if artifact_ms else None,
        "latency_ms": round(artifact_ms, 2),
        "pytorch_latency_ms": round(pytorch_ms, 2),
        "mask_dice_min": round(min(model_dices), 5),
        "validation": {"cases": len(cases), "dice_pytorch": round(dice_ref, 5), "dice_artifact": round(dice_art, 5),
                       "dice_delta": round(dice_art - dice_ref, 5)},
        "hardware": detect().summary(),
        "versions": library_versions(),
        "options": {**{k: v for k, v in asdict(options).items() if k not in ("min_shape", "opt_shape", "max_shape")},
                    "min_shape": list(profile.min), "opt_shape": list(profile.opt), "max_shape": list(profile.max)},
        "members": members_report,
        "output": str(folder),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    write_report(folder, report)
    return report


def summary_line(report: dict[str, Any], folder: str | Path) -> str:
    """The one line ``aiaa export`` prints."""
    verdict = "PASSED" if report["passed"] else "FAILED (" + "; ".join(report["failures"]) + ")"
    return (f"{report['model']} -> {report['format']} {report['precision']}: {verdict}; mask Dice min "
            f"{report['mask_dice_min']}, validation Dice {report['validation']['dice_pytorch']} -> "
            f"{report['validation']['dice_artifact']}, network {report['latency_ms']} ms vs PyTorch "
            f"{report['pytorch_latency_ms']} ms ({report['speedup_vs_pytorch']}x); report {folder}/export_report.json")

