"""Errors of the runtime: each is an ``IRError``, so the command line prints it as one line (exit
code 2) and a library user can catch every project error with one class."""

from __future__ import annotations

from retiarii_ir import IRError


class ExperimentError(IRError):
    """An experiment cannot start, resume or be read: the message says which and why."""


class ConfigError(ExperimentError):
    """A bad experiment definition: a missing file, an unknown strategy, a space that will not build."""


class UnknownExperimentError(ExperimentError):
    """No experiment of that name in the store (the message lists the ones that exist)."""
