"""Running graphs: the batching trainer, experiments (store, executors, evaluators), the CLI.

The experiment API is importable from here (loaded on first use, so ``retiarii`` starts fast):
``from runtime import Experiment, SpaceSpec, Classification, FunctionEvaluator, report``."""

_EXPORTS = {
    "Experiment": "experiment", "SpaceSpec": "space_spec", "Classification": "evaluators",
    "Regression": "evaluators", "FunctionEvaluator": "evaluators", "report": "evaluators",
    "InProcess": "executors", "ProcessPool": "executors", "Ray": "ray_executor", "Store": "store",
    "ExperimentError": "experiment_errors", "ConfigError": "experiment_errors",
}


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
