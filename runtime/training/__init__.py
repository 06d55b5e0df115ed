"""Training: K trials of a merged plan in lock step, each with its own loss, optimizer, schedule
and metrics, each result equal to training it alone; data sets by name; and the timed choice of
whether fusing a group of layers pays on this machine (the planner takes that choice as an
argument, it never times anything itself)."""

from .autotune import fusing_pays
from .data import DataError, Dataset, InMemory, batches, dataset, open_source, register_dataset
from .pipeline import Pipeline, item_generator, item_seed
from .trainer import TrialResult, train_trials

__all__ = ["DataError", "Dataset", "InMemory", "Pipeline", "TrialResult", "batches", "dataset", "fusing_pays",
           "item_generator", "item_seed", "open_source", "register_dataset", "train_trials"]
