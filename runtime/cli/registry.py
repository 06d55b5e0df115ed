"""What every ``retiarii`` subcommand shares: the registry it joins, its user error and the exit
codes. Subcommand modules import this; the entry point (``main``) imports them, so nothing loops."""

from __future__ import annotations

import argparse
from typing import Callable

from retiarii_ir.errors import IRError

# name -> (help, add_arguments(parser), run(args) -> exit code)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}

USAGE_ERROR = 2
OUTPUT_CLOSED = 141  # as a shell reports a command ended by SIGPIPE
EXIT_CODES = ("exit codes: 0 success; 1 the result failed a check, or every trial failed; 2 usage or input error "
              "(bad argument, unreadable or unwritable path, model that cannot be loaded); 130 interrupted")


class UsageError(IRError):
    """Bad input from the user: reported as one line naming the argument, exit code 2."""

    def __init__(self, argument: str | None, message: str) -> None:
        super().__init__(f"argument {argument}: {message}" if argument else message)
        self.argument = argument


def command(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None]):
    """Register ``run(args) -> int`` as ``retiarii NAME``."""
    def register(run: Callable[[argparse.Namespace], int]):
        COMMANDS[name] = (help, add_arguments, run)
        return run
    return register
