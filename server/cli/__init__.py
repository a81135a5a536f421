"""All command-line code: the ``aiaa`` command and its subcommands."""
