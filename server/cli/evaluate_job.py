"""Evaluation worker: Dice per case and per label of a model config on a datalist's validation cases.

Run as ``python -m server.cli.evaluate_job --config C --datalist D --output report.json`` by an
evaluate job; the report becomes the job's result.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from engines.data.datalist import load_datalist
from engines.errors import EngineError
from engines.evaluation.batch import load_engine
from engines.evaluation.scoring import dice_summary, score_cases

__all__ = ["main"]


def evaluate(config_path: Path, datalist: Path, output: Path, progress_file: Path | None, device: str) -> dict:
    """Score every validation case and write the report."""
    engine = load_engine(config_path, device=device)
    cases = load_datalist(datalist)["validation"]
    start, scores = time.time(), []
    for index, case in enumerate(cases, start=1):
        scores += score_cases(engine, [case])
        if progress_file is not None:
            elapsed = time.time() - start
            with open(progress_file, "a") as fh:
                fh.write(json.dumps({"event": "case", "progress": round(index / len(cases), 4), "batch": index,
                                     "batches": len(cases), "eta_s": round(elapsed / index * (len(cases) - index), 1),
                                     "metrics": {"dice": scores[-1]["dice"]}}) + "\n")
    report = {"model_config": str(config_path), "datalist": str(datalist), "labels": engine.labels,
              "summary": dice_summary(scores, engine.labels),
              "cases": [{"image": s["image"], "dice": dict(zip(engine.labels, [round(v, 4) for v in s["dice"]]))}
                        for s in scores],
              "wall_time_s": round(time.time() - start, 1)}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    """Command-line entry of the evaluation worker."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--datalist", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--progress-file", type=Path, default=None)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args(argv)
    try:
        report = evaluate(args.config, args.datalist, args.output, args.progress_file, args.device)
    except EngineError as exc:
        print(f"evaluate: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report["summary"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
