"""What an experiment store may hold, as JSON Schema. A store is a file a user may receive from
anyone, so every reader checks what it reads against these before using it: a value of the wrong
type or size is one ``StoreError`` naming the experiment, the trial and the field."""

from __future__ import annotations

import math
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from retiarii_ir.runtime.errors import ExperimentError

MAX_LABELS = 1000  # choices in one experiment's search space, and labels in one sample
MAX_VALUES = 10_000  # candidates of one choice
MAX_TEXT = 10 * 2**20  # one stored text (a trial's generated source, a traceback)
MAX_NAME = 1000  # a reference, a label, a file path

_NAME = {"type": "string", "maxLength": MAX_NAME}
_TEXT = {"type": "string", "maxLength": MAX_TEXT}
_OPTIONAL_NUMBER = {"type": ["number", "null"]}

CONFIG = {
    "type": "object",
    "required": ["space", "evaluator", "strategy", "search_space"],
    "properties": {
        "space": {
            "type": "object", "required": ["factory", "inputs"],
            "properties": {"factory": _NAME, "inputs": {"type": "array", "maxItems": 64},
                           "trust": {"type": "array", "items": _NAME, "maxItems": 1000}, "kwargs": {"type": "object"}},
        },
        "evaluator": {
            "type": "object", "required": ["kind", "params"],
            "properties": {"kind": {"enum": ["classification", "regression", "function"]},
                           "params": {"type": "object", "maxProperties": 1000}, "fn": _NAME},
        },
        "strategy": {
            "type": "object", "required": ["name"],
            "properties": {"name": {"type": "string", "maxLength": 100}, "options": {"type": "object"},
                           "seed": {"type": ["integer", "null"]}},
        },
        "search_space": {
            "type": "array", "maxItems": MAX_LABELS,
            "items": {"type": "object", "required": ["label", "values"],
                      "properties": {"label": _NAME, "values": {"type": "array", "maxItems": MAX_VALUES}}},
        },
        "model_space": {"type": "array", "maxItems": MAX_LABELS},
        "frozen_weights": {"type": ["string", "null"], "maxLength": 200},
        "max_trials": {"type": ["integer", "null"], "minimum": 1},
        "max_duration": _OPTIONAL_NUMBER, "trial_timeout": _OPTIONAL_NUMBER,
        "concurrency": {"type": "integer", "minimum": 1},
        "cross_model": {"type": "boolean"},
        "passes": {"type": "array", "items": {"type": "string", "maxLength": 100}, "maxItems": 100},
        "retries": {"type": "integer", "minimum": 0},
        "device": {"type": "string", "maxLength": 100},
        "optimize_mode": {"enum": ["maximize", "minimize"]},
        "artifacts": {"type": ["string", "null"], "maxLength": MAX_NAME},
        "config_file": {"type": ["string", "null"], "maxLength": MAX_NAME},
        "created": {"type": "string", "maxLength": 100},
    },
}

TRIAL_ATTRS = {
    "type": "object",
    "properties": {
        "sample": {"type": "object", "maxProperties": MAX_LABELS, "propertyNames": {"maxLength": MAX_NAME}},
        "train_seconds": _OPTIONAL_NUMBER,
        "trained_as": _TEXT, "traceback": _TEXT, "note": _TEXT, "source": _TEXT, "failure": _TEXT,
        "checkpoint": _NAME,
        "attempts": {"type": "integer", "minimum": 0},
        "interrupted": {"type": "boolean"},
        "requeued_from": {"type": "integer", "minimum": 0},
    },
    "patternProperties": {"^failure_[0-9]+$": _TEXT},
}

_VALIDATORS = {id(schema): Draft202012Validator(schema) for schema in (CONFIG, TRIAL_ATTRS)}


class StoreError(ExperimentError):
    """The store holds something no experiment writes: a field of the wrong type or size."""


def check(value: Any, schema: dict, where: str) -> Any:
    """``value`` when it fits ``schema``; else a StoreError naming ``where`` and the field."""
    error = best_match(_VALIDATORS[id(schema)].iter_errors(value))
    if error is None:
        return value
    field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
    message = error.message if len(error.message) <= 200 else error.message[:200] + "..."
    raise StoreError(f"{where}: {field or 'the record'} is malformed ({message}); this store was not "
                     f"written by retiarii, or was changed since")


def printable(text: Any, limit: int = 200) -> str:
    """A stored string as a terminal may show it: control characters (escape sequences a stranger
    planted) as ``?``, and at most ``limit`` characters."""
    text = "".join(c if c.isprintable() else "?" for c in str(text))
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check_metric(value: Any, where: str) -> float | None:
    """A trial's objective value as Optuna stores it: a finite number, or none."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise StoreError(f"{where}: its metric {str(value)[:80]!r} is not a finite number; this store was not "
                         f"written by retiarii, or was changed since")
    return float(value)
