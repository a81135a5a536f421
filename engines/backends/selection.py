"""``model_format: auto``: pick the fastest verified export that runs well on this hardware.

A candidate is an export folder listed in the model config's ``exports`` whose
``export_report.json`` passed, that was exported from the very weights the config names
(SHA-256 of each network's checkpoint; a fine-tuned version never serves its parent's
artifacts), whose runtime is installed, whose device is here, whose
precision this hardware runs natively, and (for reduced precision) whose validation Dice
moved by less than :data:`MAX_DICE_DELTA`. Among candidates, latencies measured on this
same run as PyTorch decide (its speed-up, a ratio comparable across machines); otherwise a fixed
order of runtimes does. An export slower than PyTorch is never served. No candidate: the PyTorch
checkpoint.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engines.backends.base import has_module
from engines.backends.formats import FORMATS
from engines.config.model import ModelConfig
from engines.hardware import Hardware

__all__ = ["MAX_DICE_DELTA", "RUNTIME_PACKAGES", "Candidate", "choose_export", "file_sha256", "read_report", "speedup",
           "verified_export"]

log = logging.getLogger(__name__)

MAX_DICE_DELTA = 0.002
REPORT_NAME = "export_report.json"
RUNTIME_PACKAGES = {name: f.package for name, f in FORMATS.items()}
_PRECISION_ORDER = ["int8", "fp16", "bf16", "fp32"]


@dataclass(frozen=True)
class Candidate:
    """One usable export: its folder, report and where it runs."""

    folder: Path
    report: dict[str, Any]
    device: str

    @property
    def format(self) -> str:
        """The export's runtime format."""
        return str(self.report["format"])

    @property
    def precision(self) -> str:
        """The export's precision."""
        return str(self.report["precision"])

    def artifacts(self) -> list[Path]:
        """One artifact per ensemble member, in member order."""
        return [self.folder / str(m["artifact"]) for m in self.report["members"]]


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file (a checkpoint's fingerprint in export reports)."""
    return _sha256(str(Path(path).resolve()), Path(path).stat().st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256(path: str, _mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_report(folder: Path) -> dict[str, Any] | None:
    """The export report in ``folder``, or None when absent or unreadable."""
    try:
        return json.loads((folder / REPORT_NAME).read_text())
    except (OSError, ValueError):
        return None


def _unverified(report: dict[str, Any] | None, folder: Path, config: ModelConfig, config_dir: Path) -> str | None:
    """Why an export is not a parity-checked copy of the config's weights as they are now, or None when it is."""
    if report is None:
        return "no readable export_report.json"
    if not report.get("passed"):
        return "its parity check failed"
    if len(report.get("members", [])) != len(config.members()):
        return f"it has {len(report.get('members', []))} networks, the model has {len(config.members())}"
    if any(not (folder / str(m.get("artifact"))).exists() for m in report["members"]):
        return "an artifact file is missing"
    for member, exported in zip(config.members(), report["members"]):
        weights = config_dir / str(member.model_path)
        if not weights.is_file() or exported.get("weights_sha256") != file_sha256(weights):
            return f"it was not exported from {weights.name} as it is now (weights differ; re-export)"
    return None


def _rejection(report: dict[str, Any] | None, folder: Path, config: ModelConfig, config_dir: Path,
               hardware: Hardware, device: str) -> str | None:
    """Why an export cannot be served here, or None when it can."""
    reason = _unverified(report, folder, config, config_dir)
    if reason is not None or report is None:
        return reason
    fmt, precision = report.get("format"), report.get("precision")
    if not has_module(RUNTIME_PACKAGES.get(str(fmt), str(fmt))):
        return f"runtime for '{fmt}' is not installed"
    if report.get("device", "cpu") != device:
        return f"it runs on {report.get('device', 'cpu')}, this server on {device}"
    if precision not in hardware.native_precisions(device):
        return f"{precision} is not native on this {'GPU' if device == 'cuda' else 'CPU'}"
    ratio = speedup(report)
    if ratio is not None and ratio < 1.0:
        return f"it ran {ratio}x PyTorch's speed in its own report: the checkpoint serves faster"
    delta = (report.get("validation") or {}).get("dice_delta")
    if precision != "fp32" and (delta is None or abs(float(delta)) >= MAX_DICE_DELTA):
        return f"{precision} moved validation Dice by {delta} (limit {MAX_DICE_DELTA})"
    return None


def speedup(report: dict[str, Any]) -> float | None:
    """How many times faster than PyTorch the export ran in its own report (same machine, same run)."""
    value = report.get("speedup_vs_pytorch")
    return float(value) if isinstance(value, (int, float)) else None


def _static_rank(fmt: str, device: str) -> int:
    spec = FORMATS.get(fmt)
    rank = None if spec is None else (spec.gpu_rank if device == "cuda" else spec.cpu_rank)
    return len(FORMATS) if rank is None else rank


def _same_hardware(report: dict[str, Any], hardware: Hardware, device: str) -> bool:
    recorded = report.get("hardware") or {}
    if device == "cuda":
        return recorded.get("gpu") == hardware.gpu
    return recorded.get("cpu") == hardware.cpu_model


def _latency(report: dict[str, Any], key: str) -> float | None:
    total = sum(float(m.get(key) or 0.0) for m in report.get("members", []))
    return total or None


def _ranking(candidates: list[Candidate], hardware: Hardware) -> Callable[[Candidate], tuple]:
    """Fastest first, as estimated for this machine.

    An export timed here is its measured latency; one timed elsewhere is PyTorch's latency here
    (from an export timed here) divided by the speed-up it measured against PyTorch in its own run,
    a ratio that carries across machines. Raw latencies from different machines are never compared:
    an export timed on this machine would otherwise beat a faster one timed on a slower one. With
    nothing timed here, the speed-ups decide; then the runtime order, then lower precision.
    """
    here = {c.folder: _same_hardware(c.report, hardware, c.device) for c in candidates}
    baselines = [ms for c in candidates if here[c.folder] and (ms := _latency(c.report, "pytorch_latency_ms"))]
    pytorch_here = min(baselines) if baselines else None

    def estimate(c: Candidate) -> tuple[int, float]:
        measured = _latency(c.report, "latency_ms")
        if here[c.folder] and measured is not None:
            return (0, measured)
        ratio = speedup(c.report)
        if pytorch_here is not None and ratio:
            return (0, pytorch_here / ratio)
        return (1, -(ratio or 1.0))  # nothing to compare with a time measured here: after those, by speed-up

    def key(c: Candidate) -> tuple:
        return (*estimate(c), _static_rank(c.format, c.device),
                _PRECISION_ORDER.index(c.precision) if c.precision in _PRECISION_ORDER else 9)

    return key


def choose_export(config: ModelConfig, config_dir: Path, hardware: Hardware, device: str) -> Candidate | None:
    """The export to serve for a ``model_format: auto`` config, or None for the PyTorch checkpoint."""
    candidates = []
    for entry in config.exports:
        folder = (config_dir / entry).resolve()
        report = read_report(folder)
        reason = _rejection(report, folder, config, config_dir, hardware, device)
        if reason is not None:
            log.info("auto: skipping export %s: %s", folder, reason)
            continue
        candidates.append(Candidate(folder, report, device))
    if not candidates:
        return None
    return min(candidates, key=_ranking(candidates, hardware))


def verified_export(config: ModelConfig, config_dir: Path, fmt: str, device: str) -> Candidate | None:
    """The first of ``config.exports`` in format ``fmt`` that passed parity and was made from the weights as they are now."""
    for entry in config.exports:
        folder = (config_dir / entry).resolve()
        report = read_report(folder)
        if report is not None and report.get("format") == fmt and _unverified(report, folder, config, config_dir) is None:
            return Candidate(folder, report, device)
    return None
