"""``python -m server.cli``: the ``aiaa`` command."""

from server.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
