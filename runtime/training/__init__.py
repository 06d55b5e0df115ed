"""Training: K trials of a merged plan in lock step, each with its own loss, optimizer, schedule
and metrics, each result equal to training it alone; data sets by name; and the timed choice of
whether fusing a group of layers pays on this machine (the planner takes that choice as an
argument, it never times anything itself)."""

from .autotune import fusing_pays
from .data import DataError, Dataset, batches, dataset, register_dataset
from .trainer import TrialResult, train_trials

__all__ = ["DataError", "Dataset", "TrialResult", "batches", "dataset", "fusing_pays", "register_dataset",
           "train_trials"]
