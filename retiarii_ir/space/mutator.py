"""Mutators: the one way a model space makes decisions and rewrites a graph.

A mutator's ``mutate(graph)`` calls ``self.choice(candidates, label)`` for each decision
and edits the graph through the public Graph methods (``replace_op``, ``insert_on_edge``,
``add_edge``, ``bypass``, ``inline``...). ``apply`` runs it on a copy with the values of a
sample and records the history; ``dry_run`` records the choices it asks for (taking the
first candidate each time), which is how a custom mutator's search space is found.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from ..analysis import structural_hash
from ..errors import IRError
from ..graph import Graph
from ..interpreter import NodeExecutionError
from .search_space import Choice, InvalidSampleError


class ShapeMismatchError(InvalidSampleError):
    """A sample makes a graph whose shapes do not fit; names the labels and nodes involved."""

    def __init__(self, message: str, labels: list[str], node_name: str) -> None:
        super().__init__(message)
        self.labels = labels
        self.node_name = node_name


class Mutator:
    """Base class: override ``mutate(graph)``; decide only through ``self.choice``."""

    def __init__(self, label: str | None = None) -> None:
        self.label = label
        self._mode: str | None = None
        self._sample: Mapping[str, Any] = {}
        self._recorded: dict[str, Choice] = {}
        self._calls = 0

    # --------------------------------------------------------------- subclass API
    def mutate(self, graph: Graph) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement mutate(graph)")

    def choice(self, candidates: Iterable[Any], label: str | None = None) -> Any:
        """The value this decision takes: the sample's in ``apply``, the first in ``dry_run``."""
        candidates = list(candidates)
        if label is None:
            label = f"{self.label or type(self).__name__}/{self._calls}"
        self._calls += 1
        if self._mode is None:
            raise IRError(f"{type(self).__name__}.choice() may only be called from mutate(), "
                          f"which apply() or dry_run() call")
        _check_plain(candidates, label, type(self).__name__)
        decision = Choice(label, tuple(candidates), kind="mutator")
        if self._mode == "dry_run":
            known = self._recorded.get(label)
            if known is not None and known.values != decision.values:
                raise IRError(f"{type(self).__name__} asks for label {label!r} twice with different "
                              f"candidates: {list(known.values)} and {candidates}")
            self._recorded[label] = decision
            return candidates[0]
        if label not in self._sample:
            raise InvalidSampleError(
                f"{type(self).__name__} asks for label {label!r}, which the sample does not hold "
                f"(sample labels: {sorted(self._sample)}); a mutator must ask for the same labels "
                f"whatever the other choices are")
        value = decision.values[decision.index(self._sample[label])]
        self._recorded[label] = decision
        return value

    # --------------------------------------------------------------- running
    def dry_run(self, graph: Graph) -> list[Choice]:
        """Mutate ``graph`` in place with the first candidate of each decision; return the decisions."""
        self._run(graph, "dry_run", {})
        return list(self._recorded.values())

    def applies(self, graph: Graph, sample: Mapping[str, Any]) -> bool:
        """Whether this mutator has anything to decide for ``sample`` (a choice site may not)."""
        return True

    def apply(self, graph: Graph, sample: Mapping[str, Any], infer: bool = True) -> Graph:
        """A mutated copy of ``graph``; ``graph`` itself never changes."""
        source = {"graph": graph.name, "structural_hash": structural_hash(graph)[:16]}
        result, used, history = apply_mutators(graph, [self], sample, source)
        result.meta.setdefault("history", []).extend(history)
        if infer and not any(spec.is_opaque for spec in result.modules.values()):
            infer_after_mutation(result, used)
        return result

    def mutate_in_place(self, graph: Graph, sample: Mapping[str, Any]) -> dict[str, Any]:
        """Run ``mutate`` on ``graph`` itself; return the decisions taken, label -> value."""
        self._run(graph, "apply", sample)
        return {label: sample[label] for label in self._recorded}

    def history_entry(self, used: Mapping[str, Any], source: Mapping[str, Any] | None = None) -> dict:
        entry: dict[str, Any] = {"mutator": type(self).__name__, "choices": dict(used)}
        if self.label is not None:
            entry["label"] = self.label
        if source is not None:
            entry["from"] = dict(source)
        return entry

    def _run(self, graph: Graph, mode: str, sample: Mapping[str, Any]) -> None:
        self._mode, self._sample, self._recorded, self._calls = mode, sample, {}, 0
        try:
            self.mutate(graph)
        finally:
            self._mode, self._sample = None, {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(label={self.label!r})"


def apply_mutators(graph: Graph, mutators: Iterable[Mutator], sample: Mapping[str, Any],
                   source: Mapping[str, Any] | None = None) -> tuple[Graph, dict[str, Any], list[dict]]:
    """The one freeze path: a copy of ``graph`` with each mutator that applies run on it in order.
    Returns the copy, the decisions taken (label -> value) and one history entry per mutator run;
    ``graph`` itself never changes. ``Mutator.apply`` and ``ModelSpace.freeze`` both come here."""
    result = graph.copy()
    used: dict[str, Any] = {}
    history: list[dict] = []
    for mutator in mutators:
        if not mutator.applies(result, sample):
            continue
        decided = mutator.mutate_in_place(result, sample)
        used.update(decided)
        history.append(mutator.history_entry(decided, source))
    return result, used, history


def _check_plain(candidates: list[Any], label: str, owner: str) -> None:
    if not candidates:
        raise IRError(f"{owner} asks for label {label!r} with no candidates")
    try:
        json.dumps(candidates)
    except (TypeError, ValueError):
        raise IRError(f"{owner}: candidates of {label!r} must be JSON values (str, int, float, bool, "
                      f"None, lists), so that samples stay plain data; got {candidates!r}") from None


def infer_after_mutation(graph: Graph, sample: Mapping[str, Any], trust: Iterable[str] = ()) -> Graph:
    """Re-type ``graph``; a failure names the node and the sample labels whose edits reach it."""
    try:
        graph.infer_types(trust=trust)
    except NodeExecutionError as e:
        labels = labels_reaching(graph, e.node_name, sample)
        node = graph.node(e.node_name) if e.node_name in graph else None
        inputs = ", ".join(i.name for i in node.inputs) if node else "?"
        where = node.describe() if node else repr(e.node_name)
        raise ShapeMismatchError(
            f"sample makes shapes incompatible: node {where} fails ({e.reason}); "
            f"it reads {inputs}, given ({e.given}). "
            f"Labels involved (nearest first): {_brief(sample, labels)}", labels, e.node_name) from None
    return graph


def labels_reaching(graph: Graph, node_name: str, sample: Mapping[str, Any]) -> list[str]:
    """Labels recorded on ``node_name`` and its nearest edited ancestors (up to 6), nearest first."""
    if node_name not in graph:
        return []
    labels: list[str] = []
    frontier, seen = [graph.node(node_name)], set()
    while frontier:
        next_frontier = []
        for node in frontier:
            if node.name in seen:
                continue
            seen.add(node.name)
            for label in node.meta.get("mutated_by", ()):
                if label in sample and label not in labels:
                    labels.append(label)
            next_frontier.extend(node.inputs)
        frontier = next_frontier
        if len(labels) >= 6:
            break
    return labels


def mark(nodes: Iterable[Any], labels: Iterable[str]) -> None:
    """Record on nodes which labels edited them, for error messages."""
    labels = list(labels)
    for node in nodes:
        marks = node.meta.setdefault("mutated_by", [])
        marks.extend(label for label in labels if label not in marks)


def _brief(sample: Mapping[str, Any], labels: list[str]) -> str:
    shown = {k: sample[k] for k in labels if k in sample} if labels else dict(sample)
    return json.dumps(shown, default=str)


