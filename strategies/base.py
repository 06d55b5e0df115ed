"""The ask/tell interface every multi-trial strategy shares.

A strategy proposes samples of a ``SearchSpace`` and observes their metric. The base
class owns everything that must hold for all of them: optimize_mode (subclasses only
ever *maximise* an internal score), seeding, no duplicate proposals until the space is
exhausted, the optional ``model_filter``, failure handling and the trial history.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from retiarii_ir.errors import InvalidSampleError, SpaceExhausted, StrategyError
from retiarii_ir.space import Sample, SearchSpace

OPTIMIZE_MODES = ("maximize", "minimize")
FAILURE_POLICIES = ("ignore", "worst")
MAX_GRID_FOR_FALLBACK = 200_000


@dataclass
class Trial:
    """One proposal and what became of it: succeeded, failed, or filtered before training."""

    number: int
    sample: Sample
    status: str  # succeeded | failed | filtered
    metric: float | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"number": self.number, "sample": self.sample, "status": self.status,
                "metric": self.metric, "error": self.error}


def resolve_space(space: Any) -> SearchSpace:
    """A SearchSpace, or the ``.search_space`` of a model space."""
    if isinstance(space, SearchSpace):
        return space
    inner = getattr(space, "search_space", None)
    if isinstance(inner, SearchSpace):
        return inner
    raise StrategyError(f"a strategy needs a SearchSpace or an object with a .search_space attribute, "
                        f"got {type(space).__name__}")


@dataclass
class _Pending:
    sample: Sample
    number: int
    extra: dict[str, Any] = field(default_factory=dict)


class Strategy:
    """Base class: ``propose()`` a sample, later ``observe(sample, metric)`` it (or a failure).

    Subclasses implement ``_suggest`` (may return a duplicate; the base class retries,
    then falls back to an unseen random sample) and ``_learn(sample, score)`` where a
    higher score is always better. ``propose`` may be called many times before any
    ``observe``: the runtime trains several trials at once.
    """

    max_suggest_retries = 30

    def __init__(self, space: Any, *, optimize_mode: str = "maximize", seed: int | None = None,
                 model_filter: Callable[[Sample], bool] | None = None, on_failure: str = "ignore",
                 max_filtered_in_a_row: int = 1000):
        if optimize_mode not in OPTIMIZE_MODES:
            raise StrategyError(f"optimize_mode must be one of {OPTIMIZE_MODES}, got {optimize_mode!r}")
        if on_failure not in FAILURE_POLICIES:
            raise StrategyError(f"on_failure must be one of {FAILURE_POLICIES}, got {on_failure!r}")
        if model_filter is not None and not callable(model_filter):
            raise StrategyError(f"model_filter must be a callable sample -> bool, got {type(model_filter).__name__}")
        self.space = resolve_space(space)
        if len(self.space) == 0:
            raise StrategyError("the search space has no choices: there is nothing to search")
        self.optimize_mode = optimize_mode
        self.seed = seed
        self.rng = random.Random(seed)
        self.model_filter = model_filter
        self.on_failure = on_failure
        self.max_filtered_in_a_row = max_filtered_in_a_row
        self.history: list[Trial] = []
        self._pending: dict[str, _Pending] = {}
        self._seen: set[str] = set()
        self._scores: dict[str, float] = {}
        self._grid_keys: list[tuple[str, Sample]] | None = None
        self._number = 0
        self._space_size = self.space.size

    # ---- public ask/tell -------------------------------------------------------------
    def propose(self) -> Sample:
        """A new sample to train: never one proposed before (SpaceExhausted when none is left)."""
        filtered_in_a_row = 0
        while True:
            sample = self._next_unseen()
            key = self.space.sample_key(sample)
            self._seen.add(key)
            pending = _Pending(dict(sample), self._number)
            self._number += 1
            self._accepted(sample, pending.extra)
            if self.model_filter is not None and not self._passes_filter(sample):
                self.history.append(Trial(pending.number, dict(sample), "filtered", error="rejected by model_filter"))
                self._learn_failure_or_worst(sample, pending.extra)
                filtered_in_a_row += 1
                if filtered_in_a_row >= self.max_filtered_in_a_row:
                    raise StrategyError(f"model_filter rejected {filtered_in_a_row} samples in a row; "
                                        f"is the limit too strict for this space?")
                continue
            self._pending[key] = pending
            return dict(sample)

    def adopt(self, sample: Mapping[str, Any]) -> Sample:
        """Take ``sample`` as a proposal this strategy did not make itself (a trial of an
        earlier run, when an experiment resumes): it counts as seen, and is pending until
        observed, like one ``propose`` returned. The model filter does not apply."""
        clean = self._checked(sample)
        key = self.space.sample_key(clean)
        if key in self._seen:
            raise StrategyError(f"cannot adopt {dict(sample)}: it was already proposed")
        self._seen.add(key)
        pending = _Pending(dict(clean), self._number)
        self._number += 1
        self._accepted(clean, pending.extra)
        self._pending[key] = pending
        return dict(clean)

    def observe(self, sample: Mapping[str, Any], metric: float | None) -> Trial:
        """Tell the metric of a proposed sample; None or NaN means the trial failed."""
        if metric is None:
            return self.observe_failure(sample, "no metric reported")
        try:
            value = float(metric)
        except (TypeError, ValueError):
            return self.observe_failure(sample, f"metric is not a number: {metric!r}")
        if math.isnan(value):
            return self.observe_failure(sample, "metric is NaN")
        key, pending = self._pop_pending(sample)
        score = value if self.optimize_mode == "maximize" else -value
        self._scores[key] = score
        trial = Trial(pending.number, pending.sample, "succeeded", metric=value)
        self.history.append(trial)
        self._learn(pending.sample, score, pending.extra)
        return trial

    def observe_failure(self, sample: Mapping[str, Any], error: BaseException | str | None = None) -> Trial:
        """Tell that a proposed sample's trial crashed; the strategy keeps going."""
        _, pending = self._pop_pending(sample)
        message = error if isinstance(error, str) or error is None else f"{type(error).__name__}: {error}"
        trial = Trial(pending.number, pending.sample, "failed", error=message)
        self.history.append(trial)
        self._learn_failure_or_worst(pending.sample, pending.extra)
        return trial

    def best(self) -> Trial | None:
        """The best succeeded trial so far (by optimize_mode), None before any success."""
        done = [t for t in self.history if t.status == "succeeded"]
        if not done:
            return None
        pick = max if self.optimize_mode == "maximize" else min
        return pick(done, key=lambda t: t.metric)

    @property
    def pending(self) -> list[Sample]:
        """Samples proposed and not yet observed."""
        return [dict(p.sample) for p in self._pending.values()]

    @property
    def exhausted(self) -> bool:
        return len(self._seen) >= self._space_size

    # ---- hooks for subclasses -------------------------------------------------------
    def _suggest(self) -> Sample:
        """A candidate sample; duplicates are allowed, the base class filters them out."""
        raise NotImplementedError

    def _learn(self, sample: Sample, score: float, extra: dict[str, Any]) -> None:
        """Use an observed score (higher is better)."""

    def _learn_failure(self, sample: Sample, extra: dict[str, Any]) -> None:
        """A sample gave no score (crash, NaN, filtered) and on_failure is 'ignore'."""

    def _accepted(self, sample: Sample, extra: dict[str, Any]) -> None:
        """A candidate became a proposal; ``extra`` travels with it until it is observed."""

    def _rejected(self, sample: Sample) -> None:
        """A suggested candidate was a duplicate and was dropped."""

    # ---- internals ------------------------------------------------------------------
    def _next_unseen(self) -> Sample:
        if self.exhausted:
            raise SpaceExhausted(f"all {self._space_size} samples of the space have been proposed")
        for _ in range(self.max_suggest_retries):
            sample = self._checked(self._suggest())
            if self.space.sample_key(sample) not in self._seen:
                return sample
            self._rejected(sample)
        return self._random_unseen()

    def _checked(self, sample: Mapping[str, Any]) -> Sample:
        try:
            return self.space.validate(sample)
        except InvalidSampleError as exc:
            raise StrategyError(f"{type(self).__name__} suggested an invalid sample: {exc}") from None

    def _random_unseen(self) -> Sample:
        """A uniformly random sample nobody proposed yet (enumerates small spaces when needed)."""
        for _ in range(100):
            sample = self.space.random_sample(self.rng)
            if self.space.sample_key(sample) not in self._seen:
                return sample
        if self._space_size > MAX_GRID_FOR_FALLBACK:
            raise StrategyError(f"could not find an unseen sample in {self._space_size} after 100 random draws")
        if self._grid_keys is None:
            self._grid_keys = [(self.space.sample_key(s), s) for s in self.space.grid()]
        unseen = [s for k, s in self._grid_keys if k not in self._seen]
        return dict(self.rng.choice(unseen))

    def _passes_filter(self, sample: Sample) -> bool:
        try:
            return bool(self.model_filter(dict(sample)))
        except Exception as exc:  # a broken filter is the user's bug: say so plainly
            raise StrategyError(f"model_filter raised {type(exc).__name__}: {exc}") from exc

    def _pop_pending(self, sample: Mapping[str, Any]) -> tuple[str, _Pending]:
        try:
            key = self.space.sample_key(self.space.validate(sample))
        except InvalidSampleError as exc:
            raise StrategyError(f"cannot observe a sample outside the space: {exc}") from None
        if key not in self._pending:
            state = "was already observed" if key in self._seen else "was never proposed"
            raise StrategyError(f"cannot observe {dict(sample)}: it {state}")
        return key, self._pending.pop(key)

    def _learn_failure_or_worst(self, sample: Sample, extra: dict[str, Any]) -> None:
        if self.on_failure == "worst" and self._scores:
            worst = min(self._scores.values())
            self._learn(sample, worst, extra)
        else:
            self._learn_failure(sample, extra)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(optimize_mode={self.optimize_mode!r}, seed={self.seed}, "
                f"trials={len(self.history)}, pending={len(self._pending)})")
