"""Multi-trial strategies: ask/tell over a model space's choices, plus a budgeted driver.

    strategy = TPE(model_space, optimize_mode="maximize", seed=0,
                   model_filter=lambda sample: sample["width"] <= 64)
    run_strategy(strategy, train_and_validate, Budget(max_trials=100, max_seconds=3600),
                 concurrency=4)
    strategy.best()  # Trial(number, sample, status, metric, error)

or by hand: ``sample = strategy.propose()`` (as many as you train at once), then
``strategy.observe(sample, metric)`` or ``strategy.observe_failure(sample, error)``.
"""

from .base import SpaceExhausted, Strategy, StrategyError, Trial, resolve_space
from .driver import run_strategy
from .loop import Budget, Evaluation, Failure, LoopResult, Pending, search_loop
from .evolution import RegularizedEvolution
from .random_search import GridSearch, Random
from .rl import PolicyBasedRL
from .tpe import TPE

__all__ = [
           "TPE",
           "Budget",
           "Evaluation",
           "Failure",
           "GridSearch",
           "LoopResult",
           "Pending",
           "PolicyBasedRL",
           "Random",
           "RegularizedEvolution",
           "SpaceExhausted",
           "Strategy",
           "StrategyError",
           "Trial",
           "resolve_space",
           "run_strategy",
           "search_loop",
]
