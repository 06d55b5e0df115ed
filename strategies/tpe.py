"""TPE through Optuna's TPESampler (optional dependency), driven by ask/tell over our space.

Nested choices map onto Optuna's define-by-run API: a child label is only suggested when
its parent took the right value; the multivariate TPE models the labels that are
always active jointly (``group=True`` would model each conditional sub-space on its own,
but measured slower and no better on our tables). Choices are suggested by index, so any candidate value
(tuples, modules names, ...) works. Optuna may re-propose a known sample; we never pass
that on: it is told the value already measured and asked again.
"""

from __future__ import annotations

import warnings
from typing import Any

from retiarii_ir.space import Sample

from .base import Strategy

INSTALL_HINT = "the TPE strategy uses Optuna's TPESampler: install it with `pip install optuna` (>= 3.5)"


def _import_optuna():
    try:
        import optuna
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return optuna


class TPE(Strategy):
    """Tree-structured Parzen Estimator (Bergstra et al. 2011) via ``optuna.samplers.TPESampler``.

    Defaults: multivariate TPE, ``n_startup_trials`` random trials first, constant liar so
    that concurrent proposals spread out.
    ``sampler_options`` are passed to TPESampler unchanged.
    """

    def __init__(self, space: Any, *, n_startup_trials: int = 10, multivariate: bool = True,
                 group: bool = False, constant_liar: bool = True, sampler_options: dict | None = None,
                 **kwargs: Any):
        super().__init__(space, **kwargs)
        optuna = _import_optuna()
        self._optuna = optuna
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        options = dict(n_startup_trials=n_startup_trials, multivariate=multivariate, group=group,
                       constant_liar=constant_liar, seed=self.rng.randrange(2**31))
        options.update(sampler_options or {})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.sampler = optuna.samplers.TPESampler(**options)
        self.study = optuna.create_study(direction="maximize", sampler=self.sampler)
        self._suggested: tuple[str, Any] | None = None  # (sample key, optuna trial) of the last suggestion

    def _ask(self, fixed: Sample | None = None):
        """One Optuna trial and its sample; ``fixed`` pins the values (used for fallbacks)."""
        if fixed is not None:
            self.study.enqueue_trial({label: self.space.choices[label].index(v) for label, v in fixed.items()},
                                     skip_if_exists=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", self._optuna.exceptions.ExperimentalWarning)
            trial = self.study.ask()
            sample: Sample = {}
            for label, choice in self.space.choices.items():
                if self.space.is_active(label, sample):
                    index = trial.suggest_categorical(label, list(range(len(choice.values))))
                    sample[label] = choice.values[index]
        return trial, sample

    def _suggest(self) -> Sample:
        trial, sample = self._ask()
        self._suggested = (self.space.sample_key(sample), trial)
        return sample

    def _rejected(self, sample: Sample) -> None:
        key, trial = self._suggested
        known = self._scores.get(key)
        if known is not None:
            self.study.tell(trial, known)  # the same architecture: the same result, at no cost
        else:
            self.study.tell(trial, state=self._optuna.trial.TrialState.FAIL)
        self._suggested = None

    def _accepted(self, sample: Sample, extra: dict[str, Any]) -> None:
        key = self.space.sample_key(sample)
        if self._suggested is not None and self._suggested[0] == key:
            extra["trial"] = self._suggested[1]
        else:  # a fallback sample chosen by the base class: let Optuna know it exists
            extra["trial"] = self._ask(fixed=sample)[0]
        self._suggested = None

    def _learn(self, sample: Sample, score: float, extra: dict[str, Any]) -> None:
        self.study.tell(extra["trial"], score)

    def _learn_failure(self, sample: Sample, extra: dict[str, Any]) -> None:
        self.study.tell(extra["trial"], state=self._optuna.trial.TrialState.FAIL)
