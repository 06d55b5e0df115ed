"""Experiments: a model space searched by a strategy, trials trained by an executor, every step in a
store (Optuna's storage) so a crash loses nothing; export and plot read the store back. A store
is data: nothing it names runs unless the experiment named it or the user trusts it."""

from ..errors import ConfigError, ExperimentError, UnknownExperimentError
from .evaluators import Classification, Evaluator, FunctionEvaluator, Regression, report
from .executors import Executor, InProcess, ProcessPool
from .experiment import Experiment, Progress
from .ray_executor import Ray
from ..references import Trust
from .space_spec import SpaceSpec
from .store import Store, TrialRecord
from .store_schema import StoreError

__all__ = ["Classification", "ConfigError", "Evaluator", "Executor", "Experiment", "ExperimentError",
           "FunctionEvaluator", "InProcess", "ProcessPool", "Progress", "Ray", "Regression", "SpaceSpec", "Store",
           "StoreError", "TrialRecord", "Trust", "UnknownExperimentError", "report"]
