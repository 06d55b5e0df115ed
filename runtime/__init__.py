"""Running graphs, in three parts with one job each:

- ``training``: the batching trainer (merged groups, per-trial optimizer steps), data sets, and
  the timed choice of whether operator batching pays;
- ``experiments``: the one search loop, its store (Optuna's storage), executors (in-process,
  process pool, Ray), evaluators, export and plot;
- ``cli``: the ``retiarii`` command and the demo.

The experiment API is importable from here (loaded on first use, so ``retiarii`` starts fast):
``from retiarii_ir.runtime import Experiment, SpaceSpec, Classification, FunctionEvaluator, report``."""

_EXPORTS = frozenset({
    "Classification", "ConfigError", "Experiment", "ExperimentError", "FunctionEvaluator", "InProcess", "ProcessPool",
    "Ray", "Regression", "SpaceSpec", "Store", "report",
})


def __getattr__(name):
    if name in _EXPORTS:
        from . import experiments

        return getattr(experiments, name)
    raise AttributeError(f"module 'retiarii_ir.runtime' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
