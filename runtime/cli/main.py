"""The ``retiarii`` command line's entry point. Each subcommand registers itself in
``registry.COMMANDS``.

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

from retiarii_ir.errors import IRError

from .registry import COMMANDS, EXIT_CODES, OUTPUT_CLOSED, USAGE_ERROR


def _load_commands() -> None:
    from . import commands, experiment_commands, show_command  # noqa: F401  (registers the subcommands)


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
    _quiet_torch_internals()
    try:
        return COMMANDS[args.command][2](args)
    except IRError as e:  # a clear message already (UsageError among them): no traceback
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
