"""The decisions of a model space as plain data: what strategies see.

A ``SearchSpace`` is an ordered set of categorical ``Choice``s. A choice may be nested:
it only matters (is *active*) when its parent choice took a given value, e.g. the
kernel size inside one LayerChoice candidate. A ``Sample`` is a plain, JSON-serialisable
dict holding a value for every active label and nothing else.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

from ..errors import InvalidSampleError

Sample = dict[str, Any]


@dataclass(frozen=True)
class AnyOf:
    """A parent condition met by several values, e.g. blocks of a Repeat exist for every
    depth above their index: ``parent=("depth", AnyOf((2, 3)))``."""

    values: tuple[Any, ...]

    def keys(self) -> set[str]:
        return {value_key(v) for v in self.values}


def parent_allows(parent: tuple[str, Any] | None, sample: Mapping[str, Any]) -> bool:
    """Whether the parent choice took (one of) the value(s) that makes a choice exist."""
    if parent is None:
        return True
    label, wanted = parent
    if label not in sample:
        return False
    if isinstance(wanted, AnyOf):
        return value_key(sample[label]) in wanted.keys()
    return value_key(sample[label]) == value_key(wanted)


def _parent_values(parent: tuple[str, Any]) -> tuple[Any, ...]:
    return parent[1].values if isinstance(parent[1], AnyOf) else (parent[1],)


@dataclass(frozen=True)
class Choice:
    """One decision: a label, its candidate values, and when it is active.

    ``parent`` is ``(label, value)`` or ``(label, AnyOf(values))``: this choice only exists
    when that choice took that value (one of those values); None for a top-level choice.
    """

    label: str
    values: tuple[Any, ...]
    parent: tuple[str, Any] | None = None
    kind: str = "categorical"  # layer | input | value | depth | categorical: for readers

    def __post_init__(self) -> None:
        if not self.values:
            raise ValueError(f"choice {self.label!r} has no candidates")
        keys = [value_key(v) for v in self.values]
        if len(set(keys)) != len(keys):
            raise ValueError(f"choice {self.label!r} has duplicate candidates: {list(self.values)}")

    def index(self, value: Any) -> int:
        """Position of ``value`` among the candidates, or InvalidSampleError listing them. An
        InputChoice of one input also takes NNI's form of its value, a list of one index."""
        if self.kind == "input" and isinstance(value, (list, tuple)) and len(value) == 1 \
                and all(isinstance(v, int) for v in self.values):
            value = value[0]
        key = value_key(value)
        for i, candidate in enumerate(self.values):
            if value_key(candidate) == key:
                return i
        raise InvalidSampleError(f"value {value!r} is not a candidate of {self.label!r}; "
                                 f"valid values: {list(self.values)}")


def value_key(value: Any) -> str:
    """Canonical form: tuples and lists compare alike, as they do after a JSON trip."""
    return json.dumps(value, sort_keys=True, default=str)


@dataclass
class SearchSpace:
    """Ordered choices, parents before their children."""

    choices: dict[str, Choice] = field(default_factory=dict)

    @classmethod
    def of(cls, choices: Sequence[Choice]) -> "SearchSpace":
        space = cls()
        for choice in choices:
            space.add(choice)
        return space

    def add(self, choice: Choice) -> None:
        if choice.label in self.choices:
            raise ValueError(f"label {choice.label!r} is defined twice")
        if choice.parent is not None:
            parent_label = choice.parent[0]
            if parent_label not in self.choices:
                raise ValueError(f"choice {choice.label!r} depends on unknown or later label {parent_label!r}")
            for value in _parent_values(choice.parent):
                self.choices[parent_label].index(value)
        self.choices[choice.label] = choice

    def __len__(self) -> int:
        return len(self.choices)

    def __iter__(self) -> Iterator[Choice]:
        return iter(self.choices.values())

    def labels(self) -> list[str]:
        return list(self.choices)

    def as_dict(self) -> dict[str, list[Any]]:
        """label → candidate values."""
        return {c.label: list(c.values) for c in self}

    def is_active(self, label: str, sample: Mapping[str, Any]) -> bool:
        choice = self.choices[label]
        while choice.parent is not None:
            if not parent_allows(choice.parent, sample):
                return False
            choice = self.choices[choice.parent[0]]
        return True

    def active_labels(self, sample: Mapping[str, Any]) -> list[str]:
        return [label for label in self.choices if self.is_active(label, sample)]

    def validate(self, sample: Mapping[str, Any]) -> Sample:
        """The sample, checked: known labels, every active label set, values in range."""
        if not isinstance(sample, Mapping):
            raise InvalidSampleError(f"a sample is a dict of label -> value, got {type(sample).__name__}")
        unknown = [k for k in sample if k not in self.choices]
        if unknown:
            raise InvalidSampleError(f"unknown labels {unknown}; valid labels: {self.labels()}")
        clean: Sample = {}
        for label in self.choices:
            if not self.is_active(label, sample):
                continue
            if label not in sample:
                raise InvalidSampleError(f"sample has no value for label {label!r}; "
                                         f"valid values: {list(self.choices[label].values)}")
            choice = self.choices[label]
            clean[label] = choice.values[choice.index(sample[label])]
        inactive = [k for k in sample if k not in clean]
        if inactive:
            raise InvalidSampleError(f"labels {inactive} are not active in this sample "
                                     f"(their parent choice took another value)")
        return clean

    def _children(self) -> dict[tuple[str, str] | None, list[Choice]]:
        children: dict[tuple[str, str] | None, list[Choice]] = {}
        for choice in self:
            if choice.parent is None:
                children.setdefault(None, []).append(choice)
                continue
            for value in _parent_values(choice.parent):
                children.setdefault((choice.parent[0], value_key(value)), []).append(choice)
        return children

    @property
    def size(self) -> int:
        """Number of distinct samples (exact; nested choices counted under their parent)."""
        children = self._children()

        def count(choices: list[Choice]) -> int:
            return math.prod(sum(count(children.get((c.label, value_key(v)), [])) for v in c.values)
                             for c in choices)

        return count(children.get(None, []))

    def grid(self) -> Iterator[Sample]:
        """Every sample once, in a fixed order (the first label varies slowest)."""
        labels = self.labels()

        def extend(i: int, partial: Sample) -> Iterator[Sample]:
            if i == len(labels):
                yield dict(partial)
                return
            label = labels[i]
            if not self.is_active(label, partial):
                yield from extend(i + 1, partial)
                return
            for value in self.choices[label].values:
                partial[label] = value
                yield from extend(i + 1, partial)
                del partial[label]

        yield from extend(0, {})

    def random_sample(self, rng: random.Random | int | None = None) -> Sample:
        """A uniformly chosen value for each active label (seeded when ``rng`` is)."""
        rng = rng if isinstance(rng, random.Random) else random.Random(rng)
        sample: Sample = {}
        for label, choice in self.choices.items():
            if self.is_active(label, sample):
                sample[label] = choice.values[rng.randrange(len(choice.values))]
        return sample

    def sample_key(self, sample: Mapping[str, Any]) -> str:
        """A canonical string for a sample, to detect duplicates."""
        return value_key({k: sample[k] for k in sorted(sample)})

    def to_json(self) -> list[dict]:
        return [{"label": c.label, "values": list(c.values), "kind": c.kind,
                 "parent": _parent_to_json(c.parent)} for c in self]

    @classmethod
    def from_json(cls, data: list[dict]) -> "SearchSpace":
        return cls.of([Choice(d["label"], tuple(d["values"]), _parent_from_json(d.get("parent")),
                              d.get("kind", "categorical")) for d in data])


def _parent_to_json(parent: tuple[str, Any] | None) -> Any:
    if parent is None:
        return None
    if isinstance(parent[1], AnyOf):
        return {"label": parent[0], "any_of": list(parent[1].values)}
    return [parent[0], parent[1]]


def _parent_from_json(data: Any) -> tuple[str, Any] | None:
    if not data:
        return None
    if isinstance(data, dict):
        return data["label"], AnyOf(tuple(data["any_of"]))
    return data[0], data[1]


def product_space(**choices: Sequence[Any]) -> SearchSpace:
    """A flat space from keyword lists: ``product_space(op=["conv", "pool"], width=[16, 32])``."""
    return SearchSpace.of([Choice(label, tuple(values)) for label, values in choices.items()])


