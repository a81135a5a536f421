"""The ``aiaa`` command: ``aiaa serve`` (the annotation server), ``aiaa train`` and ``aiaa export``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from server.cli import admin as admin_cli
from server.cli.export import add_export_parser
from server.logbuffer import LOG_FORMAT

__all__ = ["main"]


def _serve_problem(settings) -> str | None:
    """What stops the server before it starts, in one line: an unreadable pool file or token file, or a
    state folder another server holds (checked again, for real, when the app starts)."""
    from engines.config.model import parse_pool
    from engines.errors import ConfigError
    from server.jobs.lock import StateFolderLocked, StateLock

    try:
        parse_pool(settings.config)
        settings.admin_secret()
        StateLock(settings.state_path()).acquire().release()
    except (ConfigError, StateFolderLocked) as exc:
        return str(exc)
    except OSError as exc:
        return f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")
    return None


def _serve(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from engines.config.model import describe_validation_error
    from server.app import create_app
    from server.settings import Settings

    overrides = {"config": args.config}
    if args.max_upload_mb is not None:
        overrides["max_upload_bytes"] = int(args.max_upload_mb * 1024 * 1024)
    if args.admin_token_file is not None:
        overrides["admin_token_file"] = args.admin_token_file
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        print(f"aiaa serve: {describe_validation_error('settings (AIAA_*)', exc)}", file=sys.stderr)
        return 2
    problem = _serve_problem(settings)
    if problem is not None:
        print(f"aiaa serve: {problem}", file=sys.stderr)
        return 2
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level,
                **settings.uvicorn_options())
    return 0


def _train(args: argparse.Namespace) -> int:
    from engines.errors import EngineError, TrainingStopped
    from engines.training.interactive import is_interactive_train_config, train_interactive
    from engines.training.trainer import train
    from server.cli.train_progress import TrainProgress

    default = Path("runs") / "train" / Path(args.config).stem
    output = args.output or str(default / f"member{args.member}" if args.member else default)
    try:
        interactive = is_interactive_train_config(args.train_config)
    except EngineError:  # unreadable: the classic path reports it, after the model config
        interactive = False
    datalists = args.datalist or []
    if not interactive and len(datalists) != 1:
        print("aiaa train: give exactly one --datalist (several only for an interactive train config)", file=sys.stderr)
        return 2
    # Interactive runs report checkpoints, not batches of epochs: no progress bar, the file only.
    reporter = TrainProgress(args.progress_file, args.stop_file, tty=False if interactive else None)
    try:
        if interactive:
            train_interactive(args.config, args.train_config, datalists or None, output, progress=reporter.message,
                              on_progress=reporter, should_stop=reporter.should_stop, resume=args.resume,
                              device=None if args.device == "auto" else args.device)
        else:
            train(args.config, datalists[0], args.train_config, output, device=args.device, member=args.member,
                  progress=reporter.message, on_progress=reporter, should_stop=reporter.should_stop,
                  resume=args.resume)
    except TrainingStopped as exc:
        print(f"aiaa train: {exc}", file=sys.stderr)
        return 3
    except EngineError as exc:
        print(f"aiaa train: {exc}", file=sys.stderr)
        return 2
    finally:
        reporter.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``aiaa`` command."""
    parser = argparse.ArgumentParser(prog="aiaa", description="AI-assisted annotation server for 3D medical images")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the models of an engine_pool.json (AIAA protocol)")
    serve.add_argument("--config", default="engine_pool.json", help="engine_pool.json to load")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=5000)
    serve.add_argument("--max-upload-mb", type=float, default=None, help="largest accepted upload (MiB)")
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--admin-token-file", default=None,
                       help="file holding the bearer token of the /admin/ routes (or set AIAA_ADMIN_TOKEN)")
    serve.set_defaults(func=_serve)

    train = sub.add_parser("train", help="train a model from a Clara datalist")
    train.add_argument("--config", required=True, help="model config (model_configs/<name>.json)")
    train.add_argument("--datalist", action="append", default=None,
                       help="datalist JSON with 'training' and 'validation'; an interactive train config "
                            "('interactive': true) lists its datalists itself, and --datalist (repeatable) replaces them")
    train.add_argument("--train-config", required=True, help="train config JSON (epochs, batch size, ...)")
    train.add_argument("--output", default=None,
                       help="output folder (default: runs/train/<config name>; never over the shipped weights)")
    train.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    train.add_argument("--member", type=int, default=None,
                       help="for an ensemble model config: which network to train (1..N)")
    train.add_argument("--resume", action="store_true", help="continue from checkpoint_last.pt in the output folder")
    train.add_argument("--progress-file", default=None, help="append progress as JSON lines (for a job supervisor)")
    train.add_argument("--stop-file", default=None, help="stop at the next batch, with a checkpoint, once this exists")
    train.set_defaults(func=_train)

    add_export_parser(sub)
    admin_cli.add_parsers(sub)

    from server.cli.data import add_data_commands

    add_data_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``aiaa`` console script."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    logging.getLogger("numexpr").setLevel(logging.WARNING)  # its thread-count notice is not ours to show
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
