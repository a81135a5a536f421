"""``aiaa jobs ...`` and ``aiaa models ...``: the admin API of a running server, from a terminal.

The server is ``--server`` (default ``$AIAA_SERVER`` or http://127.0.0.1:5000), the token
``--token`` or ``$AIAA_ADMIN_TOKEN``. Answers print as JSON; ``jobs show --follow`` draws a
progress bar from the job's event stream until the job ends.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

__all__ = ["add_parsers"]


class AdminError(Exception):
    """The server refused or could not be reached; the message says why."""


def _client(args: argparse.Namespace):
    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would drown the answers
    token = args.token or os.environ.get("AIAA_ADMIN_TOKEN")
    if not token:
        raise AdminError("no admin token: pass --token or set AIAA_ADMIN_TOKEN")
    return httpx.Client(base_url=args.server, headers={"Authorization": f"Bearer {token}"}, timeout=args.timeout)


def _call(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    import httpx

    try:
        with _client(args) as client:
            reply = client.request(method, path, **kwargs)
    except httpx.TransportError as exc:
        raise AdminError(f"cannot reach {args.server}: {exc}") from None
    if reply.status_code >= 400:
        try:
            detail = reply.json().get("detail", reply.text)
        except ValueError:
            detail = reply.text
        raise AdminError(f"{method} {path}: HTTP {reply.status_code}: {detail}")
    content_type = reply.headers.get("content-type", "")
    return reply.json() if "json" in content_type else reply.text


def _print(value: Any) -> None:
    print(value if isinstance(value, str) else json.dumps(value, indent=2))


def _params(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values parse as JSON when they can (numbers, booleans, lists)."""
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise AdminError(f"--param takes key=value, not {pair!r}")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def _submit(args: argparse.Namespace) -> None:
    body = {"kind": args.kind, "model": args.model, "params": _params(args.param)}
    if args.datalist:
        body["datalist"] = args.datalist
    answer = _call(args, "POST", "/admin/jobs", json=body)
    _print(answer)
    if args.follow:
        args.job_id = answer["job_id"]
        _follow(args)


def _list(args: argparse.Namespace) -> None:
    jobs = _call(args, "GET", "/admin/jobs", params={"state": args.state} if args.state else None)
    if args.json:
        _print(jobs)
        return
    for job in jobs:
        epoch = f"{job['epoch']}/{job['epochs']}" if job["epoch"] else "-"
        print(f"{job['id']}  {job['kind']:<8} {job['model']:<32} {job['state']:<11} {job['progress'] * 100:5.1f}%  "
              f"epoch {epoch}")


def _show(args: argparse.Namespace) -> None:
    if args.follow:
        _follow(args)
    else:
        _print(_call(args, "GET", f"/admin/jobs/{args.job_id}"))


def _follow(args: argparse.Namespace) -> None:
    """A live progress bar from ``GET /admin/jobs/{id}/events`` until the job ends; then the job."""
    import httpx
    from tqdm import tqdm

    bar = tqdm(total=100, unit="%", bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}<{remaining}] {postfix}",
               file=sys.stderr, disable=not sys.stderr.isatty())
    job: dict[str, Any] = {}
    shown = None
    try:
        with _client(args) as client, client.stream("GET", f"/admin/jobs/{args.job_id}/events",
                                                    timeout=httpx.Timeout(args.timeout, read=None)) as stream:
            if stream.status_code >= 400:
                stream.read()
                raise AdminError(f"HTTP {stream.status_code}: {stream.text}")
            for line in stream.iter_lines():
                if not line.startswith("data: "):
                    continue
                job = json.loads(line[len("data: "):])
                metrics = job.get("metrics") or {}
                post = {"state": job["state"]}
                if job.get("epoch"):
                    post["epoch"] = f"{job['epoch']}/{job['epochs']}"
                post.update({k: round(v, 4) for k, v in metrics.items() if isinstance(v, (int, float))})
                bar.n = round(job["progress"] * 100, 1)
                bar.set_postfix(post, refresh=True)
                line = json.dumps({"state": job["state"], "progress": job["progress"], **post})
                if bar.disable and line != shown:
                    print(line, flush=True)
                    shown = line
    except httpx.TransportError as exc:
        raise AdminError(f"cannot reach {args.server}: {exc}") from None
    finally:
        bar.close()
    _print(job)
    if job.get("state") != "succeeded":
        raise AdminError(f"job {args.job_id} ended {job.get('state')}: {job.get('error')}")


def _logs(args: argparse.Namespace) -> None:
    print(_call(args, "GET", f"/admin/jobs/{args.job_id}/logs", params={"lines": args.lines}), end="")


def _cancel(args: argparse.Namespace) -> None:
    _print(_call(args, "DELETE", f"/admin/jobs/{args.job_id}"))


def _resume(args: argparse.Namespace) -> None:
    _print(_call(args, "POST", f"/admin/jobs/{args.job_id}/resume"))


def _versions(args: argparse.Namespace) -> None:
    _print(_call(args, "GET", f"/admin/models/{args.model}/versions"))


def _serve_version(args: argparse.Namespace) -> None:
    _print(_call(args, "PUT", f"/admin/models/{args.model}/serving", json={"version": args.version}))


def _run(handler):
    def run(args: argparse.Namespace) -> int:
        try:
            handler(args)
        except AdminError as exc:
            print(f"aiaa {args.command}: {exc}", file=sys.stderr)
            return 2
        return 0

    return run


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", default=os.environ.get("AIAA_SERVER", "http://127.0.0.1:5000"),
                        help="server URL (default $AIAA_SERVER or http://127.0.0.1:5000)")
    parser.add_argument("--token", default=None, help="admin token (default $AIAA_ADMIN_TOKEN)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for an answer")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``aiaa jobs`` and ``aiaa models`` on the ``aiaa`` command's subparsers."""
    jobs = sub.add_parser("jobs", help="submit and follow training, fine-tuning, evaluation and export jobs")
    actions = jobs.add_subparsers(dest="action", required=True)

    submit = actions.add_parser("submit", help="queue a job (POST /admin/jobs)")
    submit.add_argument("kind", choices=["train", "finetune", "evaluate", "export"])
    submit.add_argument("--model", required=True)
    submit.add_argument("--datalist", default=None, help="datalist path on the server (inside its data roots) "
                                                         "or a dataset id")
    submit.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="job parameter, e.g. epochs=5 learning_rate=1e-4 deploy=false (repeatable)")
    submit.add_argument("--follow", action="store_true", help="then follow it like 'jobs show --follow'")
    submit.set_defaults(func=_run(_submit))

    listing = actions.add_parser("list", help="jobs, newest first")
    listing.add_argument("--state", default=None, help="only these states, comma-separated")
    listing.add_argument("--json", action="store_true", help="print the full JSON")
    listing.set_defaults(func=_run(_list))

    show = actions.add_parser("show", help="one job as JSON")
    show.add_argument("job_id")
    show.add_argument("--follow", action="store_true", help="a live progress bar until the job ends")
    show.set_defaults(func=_run(_show))

    logs = actions.add_parser("logs", help="the last lines of a job's log")
    logs.add_argument("job_id")
    logs.add_argument("--lines", type=int, default=100)
    logs.set_defaults(func=_run(_logs))

    for name, handler, text in (("cancel", _cancel, "stop a job (clean stop, then SIGTERM, then SIGKILL)"),
                                ("resume", _resume, "resume an interrupted or cancelled training")):
        action = actions.add_parser(name, help=text)
        action.add_argument("job_id")
        action.set_defaults(func=_run(handler))

    models = sub.add_parser("models", help="model versions of a running server")
    model_actions = models.add_subparsers(dest="action", required=True)
    versions = model_actions.add_parser("versions", help="a model's versions and which one serves")
    versions.add_argument("model")
    versions.set_defaults(func=_run(_versions))
    serve = model_actions.add_parser("serve", help="serve another version (roll back or forward)")
    serve.add_argument("model")
    serve.add_argument("version")
    serve.set_defaults(func=_run(_serve_version))

    for parser in (submit, listing, show, logs, versions, serve, *[actions.choices[n] for n in ("cancel", "resume")]):
        _common(parser)
