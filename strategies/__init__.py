"""Multi-trial strategies: ask/tell over a model space's choices, plus a budgeted driver."""

from .base import SpaceExhausted, Strategy, StrategyError, Trial, resolve_space
from .driver import Budget, run_strategy
from .evolution import RegularizedEvolution
from .random_search import GridSearch, Random
from .rl import PolicyBasedRL
from .tpe import TPE

__all__ = [
           "TPE",
           "Budget",
           "GridSearch",
           "PolicyBasedRL",
           "Random",
           "RegularizedEvolution",
           "SpaceExhausted",
           "Strategy",
           "StrategyError",
           "Trial",
           "resolve_space",
           "run_strategy",
]
