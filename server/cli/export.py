"""``aiaa export``: Clara's ``tlt-export`` with a parity and speed report (see :mod:`engines.export.exporter`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engines.backends.formats import FORMATS

__all__ = ["add_export_parser"]


def _export_bundle(args: argparse.Namespace) -> int:
    import json

    from engines.errors import EngineError
    from engines.export.bundle import export_bundle

    if not args.output:
        print("aiaa export: --format bundle needs --output (a new folder)", file=sys.stderr)
        return 2
    try:
        report = export_bundle(args.config, args.output, member=args.member)
    except EngineError as exc:
        print(f"aiaa export: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report), flush=True)
    return 0


def _export(args: argparse.Namespace) -> int:
    if args.format == "bundle":
        return _export_bundle(args)
    from engines.backends.tensorrt import parse_shape
    from engines.errors import EngineError
    from engines.export.exporter import ExportOptions, export_model, summary_line

    from server.cli.train_progress import ProgressFile

    progress_file = ProgressFile(args.progress_file) if args.progress_file else None

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)
        if progress_file is not None:
            progress_file.write({"event": "message", "message": line})

    try:
        options = ExportOptions(format=args.format, precision=args.precision, min_shape=parse_shape(args.min_shape),
                                opt_shape=parse_shape(args.opt_shape), max_shape=parse_shape(args.max_shape),
                                max_batch=args.max_batch, workspace_mb=args.workspace_mb, opset=args.opset,
                                max_cases=args.max_cases, repeats=args.repeats)
        if Path(args.config).is_dir():  # a MONAI bundle folder: its network, through the bundle's own pipeline
            from engines.export.bundle_runtime import export_bundle_network
            from engines.export.exporter import DEFAULT_ROOT

            output = args.output or DEFAULT_ROOT / Path(args.config).resolve().name / f"{args.format}_{args.precision}"
            report = export_bundle_network(args.config, options, args.datalist, output, progress=progress)
        else:
            report = export_model(args.config, options, datalist=args.datalist, output=args.output,
                                  progress=progress)
    except EngineError as exc:
        print(f"aiaa export: {exc}", file=sys.stderr)
        return 2
    finally:
        if progress_file is not None:
            progress_file.close()
    print(summary_line(report, report["output"]), flush=True)
    return 0 if report["passed"] else 1


def add_export_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``aiaa export``."""
    export = sub.add_parser("export", help="export a model to OpenVINO / ONNX / TensorRT / TorchScript with a "
                                           "parity and speed report (Clara's tlt-export)")
    export.add_argument("--config", required=True,
                        help="model config (model_configs/<name>.json), or a MONAI bundle folder (its network)")
    export.add_argument("--format", required=True, choices=[*FORMATS, "bundle"],
                        help="a runtime (with a parity and speed report), or 'bundle': a MONAI bundle folder")
    export.add_argument("--member", type=int, default=None,
                        help="bundle: which network of an ensemble (1..N) the bundle holds")
    export.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16", "int8"])
    export.add_argument("--min-shape", default=None, help="smallest input, e.g. 1x2x48x48x48 (or spatial 48x48x48)")
    export.add_argument("--opt-shape", default=None, help="typical input (default: what the validation cases feed)")
    export.add_argument("--max-shape", default=None, help="largest input")
    export.add_argument("--max-batch", type=int, default=None, help="largest batch (default: the largest seen)")
    export.add_argument("--workspace-mb", type=int, default=1024, help="TensorRT builder workspace (MiB)")
    export.add_argument("--opset", type=int, default=18, help="ONNX opset")
    export.add_argument("--datalist", default=None, help="datalist whose validation cases measure parity "
                                                         "(default: the model config's 'datalist')")
    export.add_argument("--max-cases", type=int, default=None, help="use only the first N validation cases")
    export.add_argument("--repeats", type=int, default=20, help="timed runs per network (medians are reported)")
    export.add_argument("--output", default=None,
                        help="output folder (default: runs/exports/<config name>/<format>_<precision>)")
    export.add_argument("--progress-file", default=None,
                        help="append progress as JSON lines, with a heartbeat (for a job supervisor)")
    export.set_defaults(func=_export)
