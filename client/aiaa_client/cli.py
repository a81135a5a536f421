"""``aiaa-client``: the annotation server from the command line.

The server comes from ``--server`` or ``$AIAA_SERVER`` (default ``http://127.0.0.1:5000``),
the admin token from ``--token`` or ``$AIAA_ADMIN_TOKEN``. Errors print one line on stderr
and exit non-zero (1: the server refused or failed, 2: bad arguments or files).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import webbrowser
from typing import Any

from aiaa_client._client import DEFAULT_TIMEOUT_S, DEFAULT_URL, Client
from aiaa_client._errors import AIAAError
from aiaa_client._nifti import read_nifti
from aiaa_client._types import Job

__all__ = ["build_parser", "main"]


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def _json_arg(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{what} is not valid JSON: {exc}") from None


def _result_summary(result, output: str) -> None:
    path = result.save(output)
    labelled = int((result.mask > 0).sum()) if result.decodable else None
    summary = {"output": str(path), "voxels": labelled, **result.params}
    _print_json(summary)


def _models(client: Client, args: argparse.Namespace) -> None:
    models = [client.model(args.name)] if args.name else client.models(args.label, args.type)
    if args.json:
        _print_json(models)
        return
    for m in models:
        print(f"{m.get('name', '?'):40} {m.get('type', '?'):14} v{m.get('version', '?'):4} "
              f"{', '.join(m.get('labels', []))}")


def _dextr3d(client: Client, args: argparse.Namespace) -> None:
    points = _json_arg(args.points, "--points")
    params = _json_arg(args.params, "--params") if args.params else None
    if args.session:
        result = client.dextr3d(args.model, None, points, params=params, session_id=args.session)
    else:
        result = client.dextr3d(args.model, args.image, points, params=params, crop=args.crop, pad_mm=args.pad_mm)
    _result_summary(result, args.output)


def _segment(client: Client, args: argparse.Namespace) -> None:
    params = _json_arg(args.params, "--params") if args.params else None
    result = client.segmentation(args.model, None if args.session else args.image, params=params,
                                 session_id=args.session)
    _result_summary(result, args.output)


def _session(client: Client, args: argparse.Namespace) -> None:
    if args.action == "create":
        if not args.target:
            raise ValueError("session create needs an IMAGE")
        _print_json(client.create_session(args.target, expiry=args.expiry))
    elif args.action == "show":
        _print_json(client.get_session(_need_id(args)))
    else:
        _print_json(client.delete_session(_need_id(args)))


def _need_id(args: argparse.Namespace) -> str:
    if not args.target:
        raise ValueError(f"session {args.action} needs a SESSION_ID")
    return args.target


PROMPT_TYPES = ("point", "box", "scribble", "lasso", "extreme_points")


def load_replay(path: str) -> tuple[str | None, list[dict[str, Any]]]:
    """Read a file of prompts: a JSON list of steps, ``{"model", "prompts": [...]}``, or JSON Lines.

    A step is a prompt (``{"type": "point", "points": [[i, j, k]], "positive": true}``, ``"box"`` with
    ``"box": [lo, hi]``, ``"scribble"``, ``"lasso"``, ``"extreme_points"``), ``{"type": "mask",
    "file": "init.nii.gz"}`` (relative to the prompts file), ``{"type": "undo"}`` or ``{"type": "reset"}``.
    """
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    try:
        data: Any = json.loads(text)
    except ValueError:
        try:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as exc:
            raise ValueError(f"{path}: neither JSON nor JSON Lines: {exc}") from None
    model = None
    if isinstance(data, dict):
        model, data = data.get("model"), data.get("prompts")
    if not isinstance(data, list) or not all(isinstance(step, dict) for step in data):
        raise ValueError(f"{path}: expected a list of steps (objects with a 'type')")
    known = PROMPT_TYPES + ("mask", "undo", "reset")
    for n, step in enumerate(data):
        if step.get("type") not in known:
            raise ValueError(f"{path}: step {n}: 'type' must be one of {', '.join(known)}")
    base = os.path.dirname(os.path.abspath(path))
    for step in data:
        if step["type"] == "mask":
            step["file"] = os.path.join(base, step["file"])
    return model, data


def _replay_step(obj: Any, step: dict[str, Any]) -> dict[str, Any]:
    kind = step["type"]
    positive = bool(step.get("positive", True))
    if kind == "undo":
        return obj.undo()
    if kind == "reset":
        return obj.reset()
    if kind == "mask":
        with open(step["file"], "rb") as fh:
            return obj.set_mask(read_nifti(fh.read())[0])
    if kind == "box":
        lo, hi = step["box"]
        return obj.add_box(lo, hi, positive)
    if kind == "point":
        return obj.add_point(step["points"], positive)
    if kind == "scribble":
        return obj.add_scribble(step["points"], positive)
    if kind == "lasso":
        return obj.add_lasso(step["points"], positive)
    return obj.add_extreme_points(step["points"])


def _interact(client: Client, args: argparse.Namespace) -> int:
    file_model, steps = load_replay(args.prompts)
    model = args.model or file_model
    if not model:
        raise ValueError("no model: pass --model or put \"model\" in the prompts file")
    session = client.session(None if args.session else args.image, session_id=args.session)
    try:
        obj = session.interactive(model)
        for n, step in enumerate(steps):
            reply = _replay_step(obj, step)
            print(json.dumps({"n": n, "type": step["type"], **reply}), flush=True)
        if obj.mask is not None and args.output:
            with open(args.output, "wb") as fh:
                fh.write(obj.download("nii.gz"))
        _print_json({"output": args.output if obj.mask is not None else None, "model": model, "step": obj.step,
                     "voxels": int(obj.mask.sum()) if obj.mask is not None else 0})
    finally:
        if not args.session:  # a session given by id belongs to the caller
            session.close()
    return 0


class ProgressBar:
    """One line on a terminal (redrawn), or one line per change when stderr is not a terminal."""

    def __init__(self, stream=None, width: int = 30) -> None:
        self.stream, self.width = stream or sys.stderr, width
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last = ""

    def __call__(self, job: Job) -> None:
        """Draw ``job``'s progress."""
        filled = round(max(0.0, min(1.0, job.progress)) * self.width)
        parts = [f"[{'#' * filled}{'-' * (self.width - filled)}] {job.progress * 100:5.1f}%", job.state]
        if job.epochs:
            parts.append(f"epoch {job.epoch or 0}/{job.epochs}")
        parts += [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in sorted(job.metrics.items())
                  if isinstance(v, (int, float, str))]
        if job.eta_s is not None and not job.done:
            parts.append(f"eta {int(job.eta_s) // 60}m{int(job.eta_s) % 60:02d}s")
        line = "  ".join(parts)
        if line == self._last:
            return
        self._last = line
        if self.tty:
            self.stream.write("\r" + line.ljust(100) + ("\n" if job.done else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _job_json(job: Job | dict[str, Any]) -> Any:
    return job.raw if isinstance(job, Job) else job


def _finish(job: Job) -> int:
    _print_json(job.raw)
    return 0 if job.state == "succeeded" else 1


def _jobs(client: Client, args: argparse.Namespace) -> int:
    action = args.action
    if action == "submit":
        params = _json_arg(args.params, "--params") if args.params else None
        job_id = client.submit(args.kind, args.model, args.datalist, params)
        if not args.follow:
            _print_json({"job_id": job_id})
            return 0
        return _finish(client.follow(job_id, ProgressBar()))
    if action == "list":
        jobs = client.jobs()
        if args.json:
            _print_json([j.raw for j in jobs])
        for j in [] if args.json else jobs:
            print(f"{j.id:36} {j.kind or '?':9} {j.model or '?':36} {j.state:11} {j.progress * 100:5.1f}%")
        return 0
    if not args.job_id:
        raise ValueError(f"jobs {action} needs a JOB_ID")
    if action == "show":
        if args.follow:
            return _finish(client.follow(args.job_id, ProgressBar()))
        _print_json(client.job(args.job_id).raw)
    elif action == "logs":
        sys.stdout.write(client.logs(args.job_id, args.lines))
    elif action == "cancel":
        _print_json(_job_json(client.cancel(args.job_id)))
    elif action == "resume":
        _print_json(_job_json(client.resume(args.job_id)))
    return 0


def _view(client: Client, args: argparse.Namespace) -> None:
    """Upload IMAGE as a session; print the viewer's address for it and, unless --no-open, open it."""
    info = client.create_session(args.image, expiry=args.expiry)
    address = f"{client.url}/?session={info['session_id']}"
    print(address)
    if args.open:
        webbrowser.open(address)  # where there is a browser to open; the printed address works anywhere


def _versions(client: Client, args: argparse.Namespace) -> None:
    if args.serve is not None:
        _print_json(client.serve(args.model, args.serve))
    else:
        _print_json(client.versions(args.model))


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``aiaa-client``."""
    parser = argparse.ArgumentParser(prog="aiaa-client", description="Client of an AIAA-compatible annotation server")
    parser.add_argument("--server", default=os.environ.get("AIAA_SERVER", DEFAULT_URL),
                        help="server URL (default: $AIAA_SERVER or %(default)s)")
    parser.add_argument("--token", default=os.environ.get("AIAA_ADMIN_TOKEN"),
                        help="admin token (default: $AIAA_ADMIN_TOKEN)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per request")
    sub = parser.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="list the served models")
    models.add_argument("--label")
    models.add_argument("--type")
    models.add_argument("--name", help="one model's entry")
    models.add_argument("--json", action="store_true", help="print the server's JSON")
    models.set_defaults(func=_models)

    dextr3d = sub.add_parser("dextr3d", help="mask from six or more extreme points")
    dextr3d.add_argument("image", nargs="?", help="image file (omit with --session)")
    dextr3d.add_argument("--model", required=True)
    dextr3d.add_argument("--points", required=True, help="JSON list of [i, j, k] voxel indices")
    dextr3d.add_argument("-o", "--output", required=True, help="mask file (.nii.gz)")
    dextr3d.add_argument("--session", help="use this session instead of uploading IMAGE")
    dextr3d.add_argument("--crop", action="store_true", help="send only the box around the points")
    dextr3d.add_argument("--pad-mm", type=float, default=20.0, help="margin of --crop (default 20 mm)")
    dextr3d.add_argument("--params", help="extra params JSON")
    dextr3d.set_defaults(func=_dextr3d)

    segment = sub.add_parser("segment", help="automatic segmentation")
    segment.add_argument("image", nargs="?", help="image file (omit with --session)")
    segment.add_argument("--model", required=True)
    segment.add_argument("-o", "--output", required=True, help="label map file (.nii.gz)")
    segment.add_argument("--session", help="use this session instead of uploading IMAGE")
    segment.add_argument("--params", help="extra params JSON")
    segment.set_defaults(func=_segment)

    interact = sub.add_parser("interact", help="replay a file of interactive prompts (points, boxes, scribbles, "
                                                 "lassos, masks, undo, reset) on one object")
    interact.add_argument("image", nargs="?", help="image file (omit with --session)")
    interact.add_argument("--prompts", required=True, help="JSON list of steps, {model, prompts}, or JSON Lines")
    interact.add_argument("--model", help="interactive (deepgrow) model (default: the file's 'model')")
    interact.add_argument("-o", "--output", help="final mask file (.nii.gz)")
    interact.add_argument("--session", help="use this session instead of uploading IMAGE (it is kept)")
    interact.set_defaults(func=_interact)

    session = sub.add_parser("session", help="create, show or delete a session")
    session.add_argument("action", choices=["create", "show", "delete"])
    session.add_argument("target", nargs="?", help="IMAGE for create, SESSION_ID otherwise")
    session.add_argument("--expiry", type=int, default=0, help="seconds (0: the server's default)")
    session.set_defaults(func=_session)

    view = sub.add_parser("view", help="upload IMAGE and print (and open) the browser viewer's address for it")
    view.add_argument("image", help="image file or DICOM series folder")
    view.add_argument("--expiry", type=int, default=0, help="session seconds (0: the server's default)")
    view.add_argument("--no-open", dest="open", action="store_false", help="only print the address")
    view.set_defaults(func=_view)

    jobs = sub.add_parser("jobs", help="background jobs (admin token)")
    jobs.add_argument("action", choices=["submit", "list", "show", "logs", "cancel", "resume"])
    jobs.add_argument("job_id", nargs="?")
    jobs.add_argument("--kind", choices=["train", "finetune", "evaluate", "export"], default="finetune")
    jobs.add_argument("--model")
    jobs.add_argument("--datalist", help="datalist path on the server, or an uploaded dataset's id")
    jobs.add_argument("--params", help="JSON object of job parameters (epochs, learning_rate, ...)")
    jobs.add_argument("--follow", action="store_true", help="show a progress bar until the job stops")
    jobs.add_argument("--lines", type=int, default=100)
    jobs.add_argument("--json", action="store_true")
    jobs.set_defaults(func=_jobs)

    versions = sub.add_parser("versions", help="a model's versions; --serve N switches (admin token)")
    versions.add_argument("model")
    versions.add_argument("--serve", metavar="N", help="serve version N")
    versions.set_defaults(func=_versions)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``aiaa-client`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "jobs" and args.action == "submit" and not (args.model and args.datalist):
        parser.error("jobs submit needs --model and --datalist")
    if args.command in ("dextr3d", "segment", "interact") and not (args.image or args.session):
        parser.error(f"{args.command} needs an IMAGE or --session")
    try:
        with Client(args.server, args.token, timeout=args.timeout) as client:
            return int(args.func(client, args) or 0)
    except AIAAError as exc:
        print(f"aiaa-client: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the output was piped into e.g. `head`, which stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, OSError) as exc:
        print(f"aiaa-client: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
