"""``aiaa jobs ...`` and ``aiaa models ...``: a thin front of ``aiaa-client``'s admin commands.

The one implementation of the admin command line is the client's (``aiaa_client.cli``: jobs,
versions). These words only translate the server's older spelling onto it:

    aiaa jobs submit KIND --model M --datalist D --param k=v ...  ->  aiaa-client jobs submit --kind KIND ... --params JSON
    aiaa jobs list | show ID [--follow] | logs ID | cancel ID | resume ID  ->  the same words
    aiaa models versions M          ->  aiaa-client versions M
    aiaa models serve M N           ->  aiaa-client versions M --serve N

``--server``, ``--token`` and ``--timeout`` may come anywhere; the defaults are the client's
(``$AIAA_SERVER``, ``$AIAA_ADMIN_TOKEN``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["add_parsers", "client_argv"]

_GLOBAL = ("--server", "--token", "--timeout")


class _Usage(ValueError):
    """The words do not translate; the message says why."""


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def client_argv(command: str, words: list[str]) -> list[str]:
    """The ``aiaa-client`` arguments of ``aiaa jobs|models WORDS``.

    Raises:
        ValueError: words that do not translate (a ``--param`` without ``=``, a missing model).
    """
    front: list[str] = []
    rest: list[str] = []
    params: dict[str, Any] = {}
    i = 0
    while i < len(words):
        word = words[i]
        name, sep, inline = word.partition("=")
        if name in _GLOBAL or name == "--param":
            if sep:
                value = inline
            elif i + 1 < len(words):
                value, i = words[i + 1], i + 1
            else:
                raise _Usage(f"{name} needs a value")
            if name == "--param":
                key, eq, text = value.partition("=")
                if not eq or not key:
                    raise _Usage(f"--param takes key=value, not {value!r}")
                params[key] = _value(text)
            else:
                front += [name, value]
        else:
            rest.append(word)
        i += 1
    if command == "models":
        if len(rest) == 2 and rest[0] == "versions":
            return [*front, "versions", rest[1]]
        if len(rest) == 3 and rest[0] == "serve":
            return [*front, "versions", rest[1], "--serve", rest[2]]
        raise _Usage("use: aiaa models versions MODEL | aiaa models serve MODEL VERSION")
    if rest[:1] == ["submit"] and len(rest) > 1 and not rest[1].startswith("-"):
        rest = ["submit", "--kind", rest[1], *rest[2:]]
    if params:
        rest += ["--params", json.dumps(params)]
    return [*front, "jobs", *rest]


def _run(args: argparse.Namespace) -> int:
    try:
        from aiaa_client import cli as client_cli
    except ImportError:
        print(f"aiaa {args.command}: the admin commands are aiaa-client's: install it (pip install ./client)",
              file=sys.stderr)
        return 2
    try:
        argv = client_argv(args.command, args.words)
    except _Usage as exc:
        print(f"aiaa {args.command}: {exc}", file=sys.stderr)
        return 2
    return client_cli.main(argv)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register ``aiaa jobs`` and ``aiaa models`` on the ``aiaa`` command's subparsers."""
    for name, text in (("jobs", "submit and follow jobs (aiaa-client jobs ...): submit KIND --model M --datalist D "
                                "--param k=v | list | show ID [--follow] | logs ID | cancel ID | resume ID"),
                       ("models", "model versions (aiaa-client versions ...): versions MODEL | serve MODEL VERSION")):
        parser = sub.add_parser(name, help=text, description=text, prefix_chars="+")
        parser.add_argument("words", nargs=argparse.REMAINDER)
        parser.set_defaults(func=_run)
