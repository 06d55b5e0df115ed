"""The experiment store: Optuna's storage (an SQLite file by default, any SQLAlchemy URL, or
Optuna's journal file), so ``optuna-dashboard`` and Optuna's own API read it as they are.

One experiment is one Optuna study. A trial's sample is its params (and, exactly, the
``sample`` attribute), intermediate metrics are its reported steps, and generated source,
checkpoint path, timings and failure reason are trial attributes. Every change of state is
one transaction, so a process killed at any moment leaves each trial either finished with
all its records or still ``RUNNING`` (re-queued by ``resume``)."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from retiarii_ir.errors import first_line

from .experiment_errors import ExperimentError, UnknownExperimentError

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


def open_storage(url: str, create: bool = True):
    """Optuna's storage for ``url``; ``create=False`` refuses a file that does not exist yet
    (reading commands must not leave an empty database behind a typo)."""
    import optuna
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    _quiet_optuna()
    if url.startswith("journal://"):
        path = url[len("journal://"):]
        if not create and not os.path.exists(path):
            raise UnknownExperimentError(f"no experiment store at {path}")
        return JournalStorage(JournalFileBackend(path))
    kwargs = {}
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if not create and not os.path.exists(path):
            raise UnknownExperimentError(f"no experiment store at {path}")
        folder = os.path.dirname(path)
        if folder and not os.path.isdir(folder):
            os.makedirs(folder, exist_ok=True)
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
    attrs: dict
    intermediate: dict[int, float]
    started: Any
    finished: Any

    @property
    def interrupted(self) -> bool:
        return bool(self.attrs.get("interrupted"))

    @property
    def seconds(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return (self.finished - self.started).total_seconds()


class Store:
    """Experiments (studies) and their trials in one Optuna storage."""

    def __init__(self, location: str = DEFAULT_STORAGE, create: bool = True) -> None:
        self.url = storage_url(location)
        self.storage = open_storage(self.url, create)

    # ------------------------------------------------------------------ experiments
    def experiments(self) -> list[str]:
        return [s.study_name for s in self.storage.get_all_studies()]

    def create(self, name: str, config: dict, maximize: bool) -> int:
        import optuna
        from optuna.study import StudyDirection

        direction = StudyDirection.MAXIMIZE if maximize else StudyDirection.MINIMIZE
        try:
            study_id = self.storage.create_new_study([direction], name)
        except optuna.exceptions.DuplicatedStudyError:
            raise ExperimentError(f"experiment {name!r} already exists in {self.url}; resume it "
                                  f"(Experiment.resume() or `retiarii resume {name}`) or pick another name") from None
        self.storage.set_study_user_attr(study_id, CONFIG_ATTR, config)
        return study_id

    def study_id(self, name: str) -> int:
        import optuna

        try:
            return self.storage.get_study_id_from_name(name)
        except KeyError:
            known = self.experiments()
            raise UnknownExperimentError(f"no experiment {name!r} in {self.url}; "
                                         f"known: {', '.join(known) if known else 'none'}") from None
        except optuna.exceptions.StorageInternalError as e:
            raise ExperimentError(f"cannot read {self.url}: {first_line(e)}") from None

    def config(self, study_id: int) -> dict:
        config = self.storage.get_study_user_attrs(study_id).get(CONFIG_ATTR)
        if config is None:
            raise ExperimentError(f"study {self.storage.get_study_name_from_id(study_id)!r} was not "
                                  f"written by an experiment (no {CONFIG_ATTR!r} attribute)")
        return config

    def maximize(self, study_id: int) -> bool:
        from optuna.study import StudyDirection

        return self.storage.get_study_directions(study_id)[0] == StudyDirection.MAXIMIZE

    # ------------------------------------------------------------------ trials
    def trials(self, study_id: int) -> list[TrialRecord]:
        records = []
        for t in self.storage.get_all_trials(study_id, deepcopy=False):
            records.append(TrialRecord(t.number, t._trial_id, t.state.name, t.value, t.user_attrs.get("sample", {}),
                                       dict(t.user_attrs), dict(t.intermediate_values), t.datetime_start,
                                       t.datetime_complete))
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
