"""SPOS: train the supernet on sampled single paths, then search it by evolution.

Single-path one-shot (Guo et al., 2020): because every path was trained equally, a
subnet's accuracy with inherited weights ranks it. Equally in fact, not on average: each
step trains fair paths (``path_sampling="fair"``, every candidate once; ``"uniform"`` is
the paper's one path), for 40 epochs by default (``sampling.py`` says why). The evolution
scores each candidate on the arch split after re-estimating batch-norm statistics for that
path alone (on the same training batches for every candidate), and scores none twice: its
children are architectures not scored yet, as in the paper's search. A space with no more
architectures than the evolution would score (``population x (generations + 1)``) is scored
whole instead. That score is what it reports, and the export is the best-scored
architecture it evaluated. ``alphas()`` turns the same scores into a probability per candidate (a
softmax over each candidate's best score, ``temperature`` in accuracy units), so its
likeliest candidates are the export's.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from retiarii_ir.space import Sample

from .base import OneShotSearch, candidate_key
from .mixed import OneShotError
from .sampling import sampled_paths


class SPOS(OneShotSearch):
    """Uniform single-path supernet training, then evolutionary search with inherited weights."""

    has_warmup = False
    #: as many weight steps as ENAS and ProxylessNAS take with their warm-up and search together
    default_epochs = 40

    def __init__(self, space: Any, model: nn.Module, *, population: int = 12, generations: int = 4,
                 parents: int = 4, mutation_prob: float = 0.2, recalibration_batches: int = 4,
                 eval_examples: int | None = None, temperature: float = 0.01, **options: Any) -> None:
        super().__init__(space, model, **options)
        if temperature <= 0:
            raise OneShotError(f"SPOS needs temperature > 0, got {temperature}")
        for name, value, least in (("population", population, 1), ("parents", parents, 1),
                                   ("generations", generations, 0), ("recalibration_batches", recalibration_batches, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise OneShotError(f"SPOS needs {name} to be a whole number >= {least}, got {value!r}")
        if not 0.0 <= mutation_prob <= 1.0:
            raise OneShotError(f"SPOS needs 0 <= mutation_prob <= 1, got {mutation_prob}")
        self.population, self.generations, self.parents = population, generations, parents
        self.mutation_prob, self.recalibration_batches = mutation_prob, recalibration_batches
        self.eval_examples, self.temperature = eval_examples, temperature
        self.scores: dict[str, tuple[float, Sample]] = {}
        self.best: Sample | None = None
        self._recalibration: torch.Tensor | None = None

    def _train_epoch(self, epoch: int, weight_batches: list, arch_batches: list) -> dict[str, Any]:
        losses, accs = [], []
        for x, y in weight_batches:
            loss, acc = self.paths_step(sampled_paths(self.space, self.rng, self.path_sampling), x, y)
            losses.append(loss), accs.append(acc)
        self.end_epoch()
        return {"loss": sum(losses) / len(losses), "train_acc": sum(accs) / len(accs)}

    def score(self, sample: Sample) -> float:
        """Arch-split accuracy with inherited weights and recalibrated batch norms (cached)."""
        key = self.space.search_space.sample_key(sample)
        if key not in self.scores:
            x, y = self.arch_split
            n = self.eval_examples or len(x)
            if self._recalibration is None:  # the same batches for every candidate: scores differ by architecture
                order = torch.randperm(len(self.weight_split[0]), generator=self.generator)
                self._recalibration = self.weight_split[0][order[:self.recalibration_batches * self.batch_size]]
            acc = self.accuracy(sample, x[:n], y[:n], recalibrate=self._recalibration,
                                recalibration_batches=self.recalibration_batches)
            self.scores[key] = (acc, dict(sample))
        return self.scores[key][0]

    def _after_training(self, arch_split: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.scores, self._recalibration = {}, None  # this fit's weights, recalibrated on its weight split
        budget = self.population * (self.generations + 1)
        every = list(itertools.islice(self.space.search_space.grid(), budget + 1))
        if len(every) <= budget:  # no more architectures than the evolution would score: score them all
            for sample in every:
                self.score(self.space.validate(sample))
            self._export_best()
            return
        population = self._unseen(lambda: self.space.random_sample(self.rng))
        for generation in range(self.generations):
            ranked = sorted(population, key=self.score, reverse=True)
            top = ranked[:self.parents]
            children = self._unseen(lambda: self._mutate(self.rng.choice(top)) if self.rng.random() < 0.5
                                    else self._crossover(self.rng.choice(top), self.rng.choice(top)))
            population = top + children
            best_acc, _ = max(self.scores.values(), key=lambda t: t[0])
            self._report({"method": "SPOS", "phase": "evolution", "epoch": generation + 1, "epochs": self.generations,
                          "best_acc": best_acc, "evaluated": len(self.scores), "seconds": 0.0})
        for sample in population:
            self.score(sample)
        self._export_best()

    def _export_best(self) -> None:
        best_acc, self.best = max(self.scores.values(), key=lambda t: t[0])
        self._report({"method": "SPOS", "phase": "export", "epoch": self.generations, "epochs": self.generations,
                      "best_acc": best_acc, "evaluated": len(self.scores), "seconds": 0.0})

    def _unseen(self, make: Callable[[], Sample]) -> list[Sample]:
        """Up to ``population`` architectures from ``make`` that were not scored yet, each once (as
        the paper's search does: a repeat costs a score and teaches nothing). Fewer when ``make``
        finds no new one in 50 tries per place, as when the parents' neighbours are all scored."""
        found: dict[str, Sample] = {}
        for _ in range(50 * self.population):
            if len(found) == self.population:
                break
            sample = make()
            key = self.space.search_space.sample_key(sample)
            if key not in self.scores and key not in found:
                found[key] = sample
        return list(found.values())

    def _mutate(self, parent: Mapping[str, Any]) -> Sample:
        return self.walk(lambda label, values: parent[label] if label in parent and
                         self.rng.random() >= self.mutation_prob else self.rng.choice(values))

    def _crossover(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> Sample:
        def pick(label: str, values: list[Any]) -> Any:
            options = [p[label] for p in (a, b) if label in p]
            return self.rng.choice(options) if options else self.rng.choice(values)
        return self.walk(pick)

    def choose(self) -> Sample:
        if self.best is None:
            raise OneShotError("SPOS.export() needs fit() first: the evolution runs after training")
        return self.space.validate(self.best)

    def alphas(self) -> dict[str, dict[Any, float]]:
        """Per label, a softmax over each candidate's best score (unevaluated ones: the lowest)."""
        if not self.scores:
            return {}
        lowest = min(acc for acc, _ in self.scores.values())
        out: dict[str, dict[Any, float]] = {}
        for label, values in self.space.choices().items():
            best = {i: lowest for i in range(len(values))}
            seen = False
            for acc, sample in self.scores.values():
                if label in sample:
                    i, seen = self.supernet.state.index(label, sample[label]), True
                    best[i] = max(best[i], acc)
            if seen:
                probs = torch.softmax(torch.tensor([best[i] for i in range(len(values))]) / self.temperature, 0)
                out[label] = {candidate_key(v): p for v, p in zip(values, probs.tolist())}
        return out

    def arch_state_dict(self) -> dict[str, Any]:
        return {"scores": {k: list(v) for k, v in self.scores.items()}, "best": self.best}

    def load_arch_state_dict(self, state: Mapping[str, Any]) -> None:
        self.scores = {k: (v[0], v[1]) for k, v in state["scores"].items()}
        self.best = state["best"]
