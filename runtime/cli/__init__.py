"""The ``retiarii`` command line: ``main(argv)`` runs one subcommand and returns its exit code."""

from .main import main
from .registry import UsageError

__all__ = ["UsageError", "main"]
