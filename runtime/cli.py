"""The ``retiarii`` command line. Each subcommand registers itself in ``COMMANDS``.

Exit codes, the same for every subcommand:
  0    success
  1    the command ran but its result failed a check (the demo's standalone re-check), or
       every trial of an experiment failed (the most common reason is printed)
  2    usage or input error: a bad argument, an unreadable or unwritable path, a model
       factory or graph that cannot be loaded or traced, a missing optional dependency.
       One line on stderr, no traceback (argparse's own errors print the usage first).
  130  interrupted
  141  the output was closed early (a pipe into `head`): the command stops quietly
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable

# name -> (help, add_arguments(parser), run(args) -> exit code)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}

USAGE_ERROR = 2
OUTPUT_CLOSED = 141  # as a shell reports a command ended by SIGPIPE
EXIT_CODES = ("exit codes: 0 success; 1 the result failed a check, or every trial failed; 2 usage or input error "
              "(bad argument, unreadable or unwritable path, model that cannot be loaded); 130 interrupted")


class UsageError(Exception):
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


def _load_commands() -> None:
    from . import commands, experiment_commands  # noqa: F401  (registers the subcommands)


def _quiet_torch_internals() -> None:
    """Torch logs a traceback at ERROR level when a fake-tensor probe fails, although the
    tracer reports that failure itself; on a command line it reads as a crash."""
    logging.getLogger("torch._subclasses.fake_tensor").setLevel(logging.CRITICAL)


def main(argv: list[str] | None = None) -> int:
    _load_commands()
    parser = argparse.ArgumentParser(prog="retiarii", description="NAS as a compiler for PyTorch models.",
                                     epilog=EXIT_CODES)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments, _) in sorted(COMMANDS.items()):
        add_arguments(sub.add_parser(name, help=help_text, description=help_text, epilog=EXIT_CODES))
    args = parser.parse_args(argv)
    from retiarii_ir import IRError

    _quiet_torch_internals()
    try:
        return COMMANDS[args.command][2](args)
    except (UsageError, IRError) as e:  # a clear message already: no traceback
        print(f"retiarii {args.command}: error: {e}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader left (`retiarii trace ... | head -1`): nothing more to say
        _silence_stdout()
        return OUTPUT_CLOSED


def _silence_stdout() -> None:
    """Python flushes stdout at exit; into a closed pipe that is one more traceback."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":  # `python -m runtime.cli`: the subcommands register in runtime.cli, not __main__
    from runtime.cli import main as _main

    sys.exit(_main())
