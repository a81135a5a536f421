"""``aiaa export --config <bundle folder> --format onnx|openvino``: a MONAI bundle's network to a runtime.

The same proof as our own models' exports (:mod:`engines.export.exporter`): the network is
converted, then the artifact and the bundle's PyTorch network run the bundle's own serving
pipeline (:class:`~engines.tasks.bundle.BundleEngine`: its pre-processing, inferer and
post-processing) on validation volumes; ``export_report.json`` holds the largest logit
difference, the smallest mask Dice against PyTorch, both latencies and the validation Dice of
both, with the SHA-256 of ``models/model.pt``. A bundle pool entry with ``model_format: auto``
(or the format's name) and the export folder in ``exports`` serves the artifact when its report
passed and it was made from the bundle's weights as they are
(:func:`engines.tasks.bundle.bundle_export_backend`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from engines.backends import TorchBackend, load_artifact, select_device
from engines.backends.selection import file_sha256
from engines.data.datalist import load_datalist
from engines.data.io import read_modalities, read_volume
from engines.errors import ConfigError
from engines.evaluation.scoring import dice_per_label
from engines.export.exporter import (
    PARITY_THRESHOLDS,
    ActivationRecorder,
    ExportOptions,
    input_profile,
    library_versions,
    mask_dice,
    time_alternately,
    write_artifact,
    write_report,
)
from engines.hardware import detect
from engines.tasks.bundle import BUNDLE_WEIGHTS, BundleEngine
from engines.tasks.bundle_config import read_bundle

__all__ = ["export_bundle_network"]


def _cases(datalist: str | Path | None, max_cases: int | None) -> list[tuple[Any, np.ndarray]]:
    if not datalist:
        raise ConfigError("parity is measured on validation volumes: give --datalist")
    cases = load_datalist(datalist)["validation"][:max_cases]
    if not cases:
        raise ConfigError(f"{datalist}: no validation cases to measure parity on")
    return [(read_modalities(c["image"]), np.rint(read_volume(c["label"]).array).astype(np.uint8)) for c in cases]


def export_bundle_network(bundle: str | Path, options: ExportOptions, datalist: str | Path | None,
                          output: str | Path, overrides: dict[str, Any] | None = None,
                          progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Export a bundle's network, measure parity and speed through the bundle's pipeline; returns the report.

    Raises:
        ConfigError: bad options, a bundle that does not load, no validation data.
        BackendUnavailableError: the runtime's extra is missing.
    """
    options.validate()
    if options.format not in ("onnx", "openvino", "torchscript"):
        raise ConfigError(f"bundle networks export to onnx, openvino or torchscript here, not {options.format}")
    bundle = Path(bundle).resolve()
    parts = read_bundle(bundle, overrides)
    cases = _cases(datalist, options.max_cases)
    device = select_device("cpu")
    folder = Path(output)
    folder.mkdir(parents=True, exist_ok=True)
    progress(f"exporting bundle {bundle.name} to {options.format} {options.precision}: parity on {len(cases)} "
             "validation case(s)")
    reference = TorchBackend(parts.network, device)
    recorder = ActivationRecorder(reference)
    ref_masks = [BundleEngine(bundle.name, parts, recorder).infer(image, {}).mask for image, _ in cases]
    profile = input_profile(recorder.inputs, options)
    example = recorder.inputs[0]
    path = write_artifact(options, parts.network, example, profile, folder, "member1")
    artifact = load_artifact(options.format, path, device, options.precision,
                             report={"options": {"min_shape": profile.min, "opt_shape": profile.opt,
                                                 "max_shape": profile.max}})
    try:
        art_recorder = ActivationRecorder(artifact)
        art_masks = [BundleEngine(bundle.name, parts, art_recorder).infer(image, {}).mask for image, _ in cases]
        ref_ms, art_ms = time_alternately(reference, artifact, example, options.repeats)
    finally:
        artifact.close()
    n_labels = len(parts.labels)
    diffs = [float((a - b).abs().max()) for a, b in zip(art_recorder.outputs, recorder.outputs)]
    dices = [mask_dice(a, b, n_labels) for a, b in zip(art_masks, ref_masks)]
    dice_ref = float(np.nanmean([dice_per_label(m, truth, n_labels) for m, (_, truth) in zip(ref_masks, cases)]))
    dice_art = float(np.nanmean([dice_per_label(m, truth, n_labels) for m, (_, truth) in zip(art_masks, cases)]))
    threshold = PARITY_THRESHOLDS[options.precision]
    failures = [f"mask Dice {min(dices):.5f} < {threshold}"] if min(dices) < threshold else []
    report = {
        "model": bundle.name, "bundle": str(bundle), "format": options.format, "precision": options.precision,
        "device": device.type, "passed": not failures, "failures": failures, "parity_threshold": threshold,
        "speedup_vs_pytorch": round(ref_ms / art_ms, 2) if art_ms else None, "latency_ms": art_ms,
        "pytorch_latency_ms": ref_ms, "mask_dice_min": round(min(dices), 5),
        "validation": {"cases": len(cases), "dice_pytorch": round(dice_ref, 5), "dice_artifact": round(dice_art, 5),
                       "dice_delta": round(dice_art - dice_ref, 5)},
        "hardware": detect().summary(), "versions": library_versions(),
        "options": {**{k: v for k, v in asdict(options).items() if k not in ("min_shape", "opt_shape", "max_shape")},
                    "min_shape": list(profile.min), "opt_shape": list(profile.opt), "max_shape": list(profile.max)},
        "members": [{"artifact": path.name, "network": type(parts.network).__name__, "weights": str(BUNDLE_WEIGHTS),
                     "weights_sha256": file_sha256(bundle / BUNDLE_WEIGHTS), "input_shape": list(example.shape),
                     "max_abs_diff": round(max(diffs), 6), "mask_dice_min": round(min(dices), 5),
                     "mask_dice_mean": round(float(np.mean(dices)), 5), "latency_ms": art_ms,
                     "pytorch_latency_ms": ref_ms, "speedup": round(ref_ms / art_ms, 2) if art_ms else None}],
        "output": str(folder),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    write_report(folder, report)
    return report
