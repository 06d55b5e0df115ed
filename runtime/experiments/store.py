"""The experiment store: Optuna's storage (an SQLite file by default, any SQLAlchemy URL, or
Optuna's journal file), so ``optuna-dashboard`` and Optuna's own API read it as they are.

One experiment is one Optuna study. A trial's sample is its params (and, exactly, the
``sample`` attribute), intermediate metrics are its reported steps, and generated source,
checkpoint path, timings and failure reason are trial attributes. Every change of state is
one transaction, so a process killed at any moment leaves each trial either finished with
all its records or still ``RUNNING`` (re-queued by ``resume``)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from retiarii_ir.errors import first_line

from retiarii_ir.runtime.errors import ExperimentError, UnknownExperimentError
from retiarii_ir.runtime.experiments.store_schema import CONFIG, TRIAL_ATTRS, StoreError, check, check_metric

DEFAULT_STORAGE = "retiarii.db"
CONFIG_ATTR = "retiarii"


def storage_url(location: str) -> str:
    """A path (``exp.db``; ``exp.log`` for a journal file) or a URL -> an absolute URL, so
    workers started elsewhere open the same file."""
    if "://" in location:
        if location.startswith("sqlite:///") and not location.startswith("sqlite:////"):
            return "sqlite:///" + os.path.abspath(location[len("sqlite:///"):])
        return location
    path = os.path.abspath(location)
    return ("journal://" if path.endswith((".log", ".jsonl")) else "sqlite:///") + path


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _check_store_file(path: str, create: bool) -> None:
    """A store file's folder exists or can be made; a reading command needs the file itself."""
    if os.path.isdir(path):
        raise ExperimentError(f"cannot use {path} as a store: it is a folder")
    if os.path.exists(path) and not os.path.isfile(path):  # a pipe or a device would hang the reader
        raise ExperimentError(f"cannot use {path} as a store: it is not a regular file")
    if not create and not os.path.exists(path):
        raise UnknownExperimentError(f"no experiment store at {path}")
    folder = os.path.dirname(path) or "."
    existing = folder
    while existing and not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if existing and not os.path.isdir(existing):
        raise ExperimentError(f"cannot use {path} as a store: {existing} is a file, not a folder")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise ExperimentError(f"cannot use {path} as a store: cannot make {folder}: {e.strerror}") from None


def open_storage(url: str, create: bool = True):
    """Optuna's storage for ``url``; ``create=False`` refuses a file that does not exist yet
    (reading commands must not leave an empty database behind a typo)."""
    import optuna
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    _quiet_optuna()
    if url.startswith("journal://"):
        path = url[len("journal://"):]
        _check_store_file(path, create)
        try:
            return JournalStorage(JournalFileBackend(path))
        except Exception as e:  # noqa: BLE001 - a journal that is not one, or unreadable
            raise ExperimentError(f"cannot open the store {path}: {type(e).__name__}: {first_line(e)}") from None
    kwargs = {}
    if url.startswith("sqlite:///"):
        _check_store_file(url[len("sqlite:///"):], create)
        kwargs = {"connect_args": {"timeout": 120}}  # several processes write one file: wait, don't fail
    try:
        return RDBStorage(url, engine_kwargs=kwargs)
    except (optuna.exceptions.StorageInternalError, ValueError, ImportError) as e:
        raise ExperimentError(f"cannot open the store {url}: {first_line(e)}") from None
    except Exception as e:  # noqa: BLE001 - SQLAlchemy's own errors (bad URL, unreachable server)
        raise ExperimentError(f"cannot open the store {url}: {type(e).__name__}: {first_line(e)}") from None


def _param(value: Any) -> Any:
    """A sample value as an Optuna categorical choice (tuples and the like as JSON text)."""
    return value if isinstance(value, (bool, int, float, str, type(None))) else json.dumps(value)


@dataclass
class TrialRecord:
    """One trial as the store holds it (a read-only view of Optuna's FrozenTrial)."""

    number: int
    trial_id: int
    state: str  # RUNNING, WAITING, COMPLETE, FAIL, PRUNED
    metric: float | None
    sample: dict
    attrs: dict = field(repr=False)  # its generated source among them: too long to print
    intermediate: dict[int, float] = field(repr=False)
    started: Any = field(repr=False)
    finished: Any = field(repr=False)

    @property
    def interrupted(self) -> bool:
        return bool(self.attrs.get("interrupted"))

    @property
    def seconds(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return (self.finished - self.started).total_seconds()


class Store:
    """Experiments (studies) and their trials in one Optuna storage. Every read is checked:
    a store is a file anyone may hand over, so a malformed one ends in one ``StoreError``."""

    def __init__(self, location: str = DEFAULT_STORAGE, create: bool = True) -> None:
        if not isinstance(location, str) or not location or "\0" in location:
            raise ExperimentError(f"a store is a file path or a database URL, got {location!r}")
        self.url = storage_url(location)
        self.storage = open_storage(self.url, create)

    @contextlib.contextmanager
    def _reading(self, what: str):
        """Errors from deep inside Optuna or SQLAlchemy while reading become one line."""
        try:
            yield
        except ExperimentError:
            raise
        except Exception as e:  # noqa: BLE001 - a crafted or damaged store: say what could not be read
            raise StoreError(f"cannot read {what} from {self.url}: {type(e).__name__}: {first_line(e)}") from None

    # ------------------------------------------------------------------ experiments
    def experiments(self) -> list[str]:
        with self._reading("the experiments"):
            return [s.study_name for s in self.storage.get_all_studies()]

    def create(self, name: str, config: dict, maximize: bool) -> int:
        import optuna
        from optuna.study import StudyDirection

        direction = StudyDirection.MAXIMIZE if maximize else StudyDirection.MINIMIZE
        try:
            study_id = self.storage.create_new_study([direction], name)
        except optuna.exceptions.DuplicatedStudyError:
            raise ExperimentError(f"experiment {name!r} already exists in {self.url}; resume it "
                                  f"(Experiment.resume() or `retiarii resume CONFIG.py`) or pick another name") from None
        self.storage.set_study_user_attr(study_id, CONFIG_ATTR, config)
        return study_id

    def update_config(self, study_id: int, config: dict) -> None:
        """A resumed experiment's settings (a budget may grow), in the one attribute readers check."""
        self.storage.set_study_user_attr(study_id, CONFIG_ATTR, config)

    def study_id(self, name: str) -> int:
        import optuna

        try:
            return self.storage.get_study_id_from_name(name)
        except KeyError:
            known = self.experiments()
            shown = ", ".join(known[:20]) + (f" and {len(known) - 20} more" if len(known) > 20 else "")
            raise UnknownExperimentError(f"no experiment {name!r} in {self.url}; "
                                         f"known: {shown or 'none'}") from None
        except optuna.exceptions.StorageInternalError as e:
            raise ExperimentError(f"cannot read {self.url}: {first_line(e)}") from None
        except Exception as e:  # noqa: BLE001 - a file that is not an Optuna store
            raise StoreError(f"cannot read {self.url}: {type(e).__name__}: {first_line(e)}") from None

    def name_of(self, study_id: int) -> str:
        with self._reading("the experiment's name"):
            return self.storage.get_study_name_from_id(study_id)

    def config(self, study_id: int) -> dict:
        """The experiment's recorded settings, checked against the schema."""
        with self._reading("the experiment's settings"):
            config = self.storage.get_study_user_attrs(study_id).get(CONFIG_ATTR)
            name = self.storage.get_study_name_from_id(study_id)
        if config is None:
            raise ExperimentError(f"study {name!r} was not written by an experiment (no {CONFIG_ATTR!r} attribute)")
        return check(config, CONFIG, f"experiment {name!r} in {self.url}")

    def maximize(self, study_id: int) -> bool:
        from optuna.study import StudyDirection

        with self._reading("the experiment's direction"):
            return self.storage.get_study_directions(study_id)[0] == StudyDirection.MAXIMIZE

    # ------------------------------------------------------------------ trials
    def trials(self, study_id: int) -> list[TrialRecord]:
        """Every trial, each checked: attributes against the schema, metrics finite numbers."""
        records = []
        with self._reading("the trials"):
            trials = self.storage.get_all_trials(study_id, deepcopy=False)
            for t in trials:
                where = f"trial {t.number} in {self.url}"
                attrs = check(dict(t.user_attrs), TRIAL_ATTRS, where)
                steps = {int(step): check_metric(value, f"{where}, step {step}")
                         for step, value in t.intermediate_values.items()}
                records.append(TrialRecord(int(t.number), int(t._trial_id), t.state.name,
                                           check_metric(t.value, where), attrs.get("sample", {}), attrs, steps,
                                           t.datetime_start, t.datetime_complete))
        return records

    def add_trial(self, study_id: int, sample: dict, choices: dict[str, list], state: str = "RUNNING",
                  attrs: dict | None = None) -> tuple[int, int]:
        """A new trial holding ``sample``, in one transaction -> (number, trial_id)."""
        from optuna.distributions import CategoricalDistribution
        from optuna.trial import TrialState, create_trial

        params = {label: _param(value) for label, value in sample.items()}
        distributions = {label: CategoricalDistribution([_param(v) for v in choices[label]]) for label in sample}
        template = create_trial(state=TrialState[state], params=params, distributions=distributions,
                                user_attrs={"sample": dict(sample), **(attrs or {})})
        trial_id = self.storage.create_new_trial(study_id, template_trial=template)
        return self.storage.get_trial_number_from_id(trial_id), trial_id

    def start(self, trial_id: int) -> None:
        """A queued trial (WAITING) begins to run."""
        from optuna.trial import TrialState

        self.storage.set_trial_state_values(trial_id, TrialState.RUNNING)

    def report(self, trial_id: int, step: int, value: float) -> None:
        self.storage.set_trial_intermediate_value(trial_id, step, value)

    def set_attrs(self, trial_id: int, attrs: dict) -> None:
        for key, value in attrs.items():
            self.storage.set_trial_user_attr(trial_id, key, value)

    def complete(self, trial_id: int, metric: float, attrs: dict) -> None:
        """Records first, then the state: a crash in between leaves a RUNNING trial, re-run on resume."""
        from optuna.trial import TrialState

        self.set_attrs(trial_id, attrs)
        self.storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [metric])

    def fail(self, trial_id: int, reason: str, attrs: dict | None = None) -> None:
        from optuna.trial import TrialState

        self.set_attrs(trial_id, {**(attrs or {}), "failure": reason})
        self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
