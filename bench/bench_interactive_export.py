"""Protocol parity and per-step latency of an interactive model's export against its PyTorch checkpoint.

Usage: python bench/bench_interactive_export.py --config model_configs/interactive_any.json \
           --export models/interactive_any/openvino_fp32 [--datalist D] [--objects 10] [-o parity.json]

``aiaa export`` checks one click per validation case; this runs the whole interactive protocol
(a 2D box on the largest axial slice, then 5 error-component clicks) on the first ``--objects``
validation objects of an interactive datalist (default: the config's ``datalist``) with both the
PyTorch checkpoint and the export, one object after the other with each (alternating which goes
first, so both share the machine's state), and prints JSON: per backend the mean Dice and NSD per
step and the per-step latency (median and mean ms, crop to paste); the largest Dice and NSD
difference at any step of any object; whether the export is servable for these weights here
(``model_format: auto`` would pick it: its report passed and its recorded weights hash matches
the checkpoint); and ``matches`` (servable and every Dice within ``--tolerance``). Exit status 1
when it does not match. Wall clock on whatever machine runs it, both on ``--threads`` CPU threads.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.backends import TorchBackend, load_artifact, select_device
from engines.backends.selection import choose_export, read_report
from engines.config.model import load_model_config
from engines.evaluation.interactive import (
    interactive_settings,
    load_interactive_datalist,
    mean_per_step,
    model_network,
    object_volumes,
    run_protocol,
    validation_objects,
)
from engines.hardware import detect


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the interactive model config (its PyTorch checkpoint)")
    parser.add_argument("--export", required=True, help="folder of the export (export_report.json and artifact)")
    parser.add_argument("--datalist", default=None, help="interactive datalist (default: the config's datalist)")
    parser.add_argument("--objects", type=int, default=10)
    parser.add_argument("--clicks", type=int, default=5)
    parser.add_argument("--tolerance", type=float, default=0.01, help="largest Dice difference at any step")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of both (default 1)")
    parser.add_argument("-o", "--output", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)

    config_path = Path(args.config)
    config = load_model_config(config_path)
    config_dir = config_path.parent
    export = Path(args.export).resolve()
    report = read_report(export)
    if report is None:
        print(f"{export}: no export_report.json", file=sys.stderr)
        return 2
    device = select_device("cpu")
    torch.set_num_threads(args.threads)
    reference = TorchBackend.from_checkpoint((config_dir / str(config.model_path)).resolve(), config, device)
    artifact = load_artifact(report["format"], export / report["members"][0]["artifact"], device,
                             report["precision"], args.threads, report)
    auto = config.model_copy(update={"model_format": "auto", "exports": [str(export)]})
    servable = choose_export(auto, config_dir, detect(), device.type) is not None
    networks = {"pytorch": model_network(reference, config), report["format"]: model_network(artifact, config)}
    settings = interactive_settings(config)
    datalist = Path(args.datalist) if args.datalist else (config_dir / str(config.datalist)).resolve()
    objects = validation_objects(load_interactive_datalist(datalist))[:args.objects]

    steps: dict[str, list[list[tuple]]] = {name: [] for name in networks}
    for n, (_, image, truth, spacing) in enumerate(object_volumes(objects)):
        order = list(networks) if n % 2 == 0 else list(networks)[::-1]
        for name in order:
            steps[name].append(run_protocol(networks[name], image, spacing, truth, config.roi, variant="box",
                                            n_clicks=args.clicks, interactive=settings, clock=time.perf_counter))
    for backend in (reference, artifact):
        backend.close()

    def figures(runs: list[list[tuple]]) -> dict:
        ms = [s[3] for run in runs for s in run if s[0] != "none"]
        return {"dice_per_step": mean_per_step([[s[1] for s in run] for run in runs]),
                "nsd_per_step": mean_per_step([[s[2] for s in run] for run in runs]),
                "ms_per_step_median": round(statistics.median(ms), 1), "ms_per_step_mean": round(statistics.mean(ms), 1)}

    ref, art = steps["pytorch"], steps[report["format"]]
    dice_diff = max(abs(a[1] - b[1]) for r, x in zip(ref, art) for a, b in zip(r, x))
    nsd_diff = max(abs(a[2] - b[2]) for r, x in zip(ref, art) for a, b in zip(r, x))
    result = {
        "config": str(config_path), "export": os.path.relpath(export), "format": report["format"],
        "precision": report["precision"], "datalist": os.path.relpath(datalist), "objects": len(objects),
        "protocol": f"2D box on the largest axial slice + {args.clicks} error-component clicks",
        "backends": {name: figures(runs) for name, runs in steps.items()},
        "max_dice_diff": round(dice_diff, 5), "max_nsd_diff": round(nsd_diff, 5), "tolerance": args.tolerance,
        "servable": servable, "matches": bool(servable and dice_diff <= args.tolerance),
        "export_weights_sha256": report["members"][0]["weights_sha256"],
        "threads": torch.get_num_threads(), "hardware": detect().summary(),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
    return 0 if result["matches"] else 1


if __name__ == "__main__":
    sys.exit(main())
