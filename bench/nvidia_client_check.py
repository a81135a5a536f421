"""Drive a running server with NVIDIA's own AIAA Python client, unmodified; prints JSON.

Usage:
    python bench/nvidia_client_check.py --client-api /path/to/client_api.py \
        [--server http://127.0.0.1:5000] [--case 0]

``client_api.py`` is ``py_client/client_api.py`` of github.com/NVIDIA/ai-assisted-annotation-client
(not redistributed here; it needs numpy, SimpleITK and Python 3.8+). Every call the plugins make is
exercised on one validation case of MSD Task04 Hippocampus: model listing, sessions, automatic
segmentation with and without a session, extreme points with the client's own crop (pad 20 mm,
128^3) and without it, generic inference, an unknown session (HTTP 440) and a closed one (404).
Each masked result is scored against the case's label. The exit status is 1 if any call failed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "msd_hippocampus"
ANNOTATION, SEGMENTATION = "annotation_mri_hippocampus", "segmentation_mri_hippocampus"


def load_client(path: str):
    """Import NVIDIA's client_api.py from a file path."""
    spec = importlib.util.spec_from_file_location("client_api", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return round(float(2 * (a & b).sum() / total), 4) if total else float("nan")


def score(path: str, label: np.ndarray, kind: str) -> dict:
    """Dice of a returned mask file against the label (per label for segmentation)."""
    mask = sitk.GetArrayFromImage(sitk.ReadImage(path))
    if mask.shape != label.shape:
        return {"error": f"mask shape {mask.shape} != label shape {label.shape}"}
    if kind == "segmentation":
        return {"dice": [dice(mask == v, label == v) for v in (1, 2)]}
    return {"dice": dice(mask > 0, label > 0)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--client-api", required=True, help="path to NVIDIA's client_api.py")
    parser.add_argument("--server", default="http://127.0.0.1:5000")
    parser.add_argument("--case", type=int, default=0, help="index into the validation split")
    args = parser.parse_args()
    warnings.simplefilter("ignore", ResourceWarning)  # the client never closes its sockets

    api = load_client(args.client_api)
    case = json.loads((DATA / "datalist.json").read_text())["validation"][args.case]
    image = str(DATA / case["image"])
    label = np.rint(sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / case["label"])))).astype(np.uint8)
    # six extreme points, [i, j, k] (the array is [k, j, i])
    kji = np.argwhere(label > 0)
    points = [[int(r[2]), int(r[1]), int(r[0])]
              for ax in range(3) for r in (kji[kji[:, ax].argmin()], kji[kji[:, ax].argmax()])]

    client = api.AIAAClient(args.server)
    out = Path(tempfile.mkdtemp(prefix="aiaa-client-"))
    report: dict = {"server": args.server, "case": case["image"], "points": points, "calls": []}

    def call(name, fn, kind=None, expect_error=None):
        entry: dict = {"call": name}
        target = str(out / f"{len(report['calls'])}.nii.gz")
        try:
            result = fn(target)
            if expect_error is not None:
                entry.update(ok=False, detail=f"expected AIAAException {expect_error}, got a result")
            else:
                entry.update(ok=True)
                if kind:
                    entry.update(score(target, label, kind))
                    entry["timings"] = result.get("timings") if isinstance(result, dict) else None
            report["calls"].append(entry)
            return result
        except api.AIAAException as exc:
            ok = expect_error is not None and exc.error == expect_error
            entry.update(ok=ok, detail=f"AIAAException error={exc.error} msg={exc.msg!r}")
        except Exception as exc:  # anything else is a client-side break: report it, go on
            entry.update(ok=False, detail=f"{type(exc).__name__}: {exc}")
        report["calls"].append(entry)
        return None

    call("model_list()", lambda _: client.model_list())
    call("model_list(label='hippocampus')", lambda _: client.model_list("hippocampus"))
    call(f"model('{ANNOTATION}')", lambda _: client.model(ANNOTATION))
    session = call("create_session", lambda _: client.create_session(image)) or {}
    sid = session.get("session_id")
    call("get_session", lambda _: client.get_session(sid))
    call("segmentation with session", lambda t: client.segmentation(SEGMENTATION, image, t, session_id=sid),
         "segmentation")
    call("segmentation", lambda t: client.segmentation(SEGMENTATION, image, t), "segmentation")
    call("dextr3d, client crop (pad 20, 128^3)",
         lambda t: client.dextr3d(ANNOTATION, points, image, t, pad=20, roi_size="128x128x128"), "annotation")
    call("dextr3d, full volume",
         lambda t: client.dextr3d(ANNOTATION, points, image, t, pre_process=False), "annotation")
    call("dextr3d, full volume, with session",
         lambda t: client.dextr3d(ANNOTATION, points, image, t, pre_process=False, session_id=sid), "annotation")
    call("inference", lambda t: client.inference(SEGMENTATION, {}, image, t), "segmentation")
    call("inference with session", lambda t: client.inference(SEGMENTATION, {}, image, t, session_id=sid),
         "segmentation")
    call("inference with unknown session -> 440",
         lambda t: client.inference(SEGMENTATION, {}, image, t, session_id="does-not-exist"),
         expect_error=api.AIAAError.SESSION_EXPIRED)
    call("close_session", lambda _: client.close_session(sid))
    call("get_session after close -> 404", lambda _: client.get_session(sid), expect_error=api.AIAAError.SERVER_ERROR)
    report["passed"] = all(c["ok"] for c in report["calls"])
    print(json.dumps(report, indent=2))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
