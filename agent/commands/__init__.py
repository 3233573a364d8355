"""One module per `signal-agent` subcommand.

Each module exposes `NAME`, `HELP`, `add_arguments(parser)` and `run(args) -> int`. A command
raises `UsageError` (or a data error) for input the user can fix; `agent.cli` prints it as one
line and exits with status 2.
"""


class UsageError(Exception):
    """Input the user can fix; printed as one line, exit status 2."""
