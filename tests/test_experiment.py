"""Experiments end to end, in process: what the store holds is read back with Optuna's own API
or plain SQL, and compared with expectations computed independently of the experiment code."""

import json
import os
import sqlite3
import subprocess
import sys

import optuna
import pytest
import torch

import retiarii_ir as ir
from retiarii_ir import IRError, nn
from retiarii_ir.runtime import Classification, Experiment, FunctionEvaluator, SpaceSpec
from retiarii_ir.runtime.errors import ConfigError, ExperimentError, UnknownExperimentError
from tests.experiment_fixtures import TinySpace

SPACE = SpaceSpec("tests.experiment_fixtures:TinySpace", inputs=[(2, 1, 8, 8)])


def _training(**overrides):
    options = dict(epochs=2, max_steps=3, lr=nn.ValueChoice([1e-2, 1e-3], label="lr"))
    options.update(overrides)
    return Classification("digits", **options)


def _study(path, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{path}")


def _parameters(sample):
    with ir.fixed_arch({k: sample[k] for k in ("width", "op")}):
        model = TinySpace()
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def merged_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("merged") / "e.db"
    Experiment(SPACE, _training(), "grid", max_trials=8, concurrency=4, storage=str(path), name="merged",
               progress=False).run()
    return path


def test_every_trial_is_in_optunas_storage_with_params_steps_and_attributes(merged_run):
    trials = _study(merged_run, "merged").trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 8
    samples = {json.dumps(t.params, sort_keys=True) for t in trials}
    assert len(samples) == 8  # the whole grid (2 widths x 2 ops x 2 learning rates), none twice
    for t in trials:
        assert t.params == t.user_attrs["sample"]
        assert sorted(t.intermediate_values) == [0, 1]  # one validation per epoch
        assert t.value == t.intermediate_values[1]
        assert 0.0 <= t.value <= 1.0
        assert t.user_attrs["trained_as"] == "merged with 4"
        assert "class Model(" in t.user_attrs["source"] and os.path.isfile(t.user_attrs["checkpoint"])
        assert t.user_attrs["train_seconds"] > 0 and t.datetime_complete >= t.datetime_start


def test_merged_training_gives_each_trial_the_metrics_it_gets_alone(merged_run, tmp_path):
    path = tmp_path / "alone.db"
    Experiment(SPACE, _training(), "grid", max_trials=8, concurrency=4, storage=str(path), name="alone",
               cross_model=False, progress=False).run()
    merged = {json.dumps(t.params, sort_keys=True): t.value for t in _study(merged_run, "merged").trials}
    alone = {json.dumps(t.params, sort_keys=True): t for t in _study(path, "alone").trials}
    assert {k: t.value for k, t in alone.items()} == merged  # exact passes only: the same numbers
    assert {t.user_attrs["trained_as"] for t in alone.values()} == {"alone"}


def test_top_ranks_by_metric_and_export_reproduces_it_in_a_fresh_interpreter(merged_run, tmp_path):
    experiment = Experiment(SPACE, _training(), "grid", max_trials=8, storage=str(merged_run), name="merged")
    best = experiment.top(3)
    values = sorted((t.value for t in _study(merged_run, "merged").trials), reverse=True)
    assert [r.metric for r in best] == values[:3]
    paths = experiment.export(1, str(tmp_path / "out"))
    run = subprocess.run([sys.executable, "-I", "-B", "model.py"], cwd=tmp_path / "out", capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert float(run.stdout.split("metric:")[1]) == pytest.approx(best[0].metric, abs=1e-6)
    source = open(paths["model"]).read()
    imports = {line.split()[1].split(".")[0] for line in source.splitlines() if line.startswith(("import ", "from "))}
    assert imports <= {"torch", "__future__", "os", "math", "operator"}, imports
    import onnxruntime

    validation = torch.load(paths["validation"], weights_only=True)
    session = onnxruntime.InferenceSession(paths["onnx"])
    logits = session.run(None, {session.get_inputs()[0].name: validation["x"].numpy()})[0]
    accuracy = (torch.from_numpy(logits).argmax(1) == validation["y"]).float().mean().item()
    assert accuracy == pytest.approx(best[0].metric, abs=1e-6)


def test_function_evaluator_with_intermediate_reports_and_a_searched_argument(tmp_path):
    path = tmp_path / "fn.db"
    evaluator = FunctionEvaluator("tests.experiment_fixtures:parameter_count",
                                  offset=nn.ValueChoice([0.0, 0.5], label="offset"))
    Experiment(SPACE, evaluator, "random", max_trials=5, concurrency=2, storage=str(path), name="fn",
               progress=False).run()
    with sqlite3.connect(path) as db:
        rows = db.execute("select t.trial_id, t.state, v.value from trials t join trial_values v "
                          "on v.trial_id = t.trial_id").fetchall()
        steps = db.execute("select trial_id, step, intermediate_value from trial_intermediate_values "
                           "order by trial_id, step").fetchall()
        attrs = dict(((tid, key), value) for tid, key, value in
                     db.execute("select trial_id, key, value_json from trial_user_attributes"))
    assert len(rows) == 5 and {state for _, state, _ in rows} == {"COMPLETE"}
    for trial_id, _, value in rows:
        sample = json.loads(attrs[(trial_id, "sample")])
        count = _parameters(sample)
        assert value == count + sample["offset"]
        assert [(s, v) for t, s, v in steps if t == trial_id] == [(0, count / 3), (1, count * 2 / 3), (2, count)]


def test_resume_of_a_finished_experiment_extends_it_without_repeating_a_sample(tmp_path):
    path = str(tmp_path / "more.db")
    evaluator = FunctionEvaluator("tests.experiment_fixtures:parameter_count",
                                  offset=nn.ValueChoice([0.0, 0.5, 1.0], label="offset"))
    Experiment(SPACE, evaluator, "evolution", max_trials=4, concurrency=2, storage=path, name="more",
               progress=False, strategy_options={"population_size": 3, "sample_size": 2}).run()
    Experiment(SPACE, evaluator, "evolution", max_trials=9, concurrency=2, storage=path, name="more",
               progress=False, strategy_options={"population_size": 3, "sample_size": 2}).resume()
    trials = _study(tmp_path / "more.db", "more").trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 9
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 9


def test_bad_definitions_are_one_project_error_each(tmp_path):
    db = str(tmp_path / "e.db")
    with pytest.raises(ConfigError, match="unknown strategy 'annealing'"):
        Experiment(SPACE, _training(), "annealing", max_trials=2, storage=db)
    with pytest.raises(ConfigError, match="cannot import"):
        Experiment(SpaceSpec("no_such_module:Net", inputs=[(1, 2)]), _training(), max_trials=2, storage=db)
    with pytest.raises(ConfigError, match="unknown executor 'cluster'"):
        Experiment(SPACE, _training(), executor="cluster", max_trials=2, storage=db)
    with pytest.raises(ConfigError, match="max_trials, max_duration"):
        Experiment(SPACE, _training(), storage=db)
    with pytest.raises(ConfigError, match="device must be 'cpu', 'cuda' or 'cuda:N', got 'tpu'"):
        Experiment(SPACE, _training(), max_trials=2, storage=db, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="sees no CUDA device"):
            Experiment(SPACE, _training(), max_trials=2, storage=db, device="cuda")
    with pytest.raises(ConfigError, match="optimizer must be one of"):
        Experiment(SPACE, _training(optimizer="lbfgs"), max_trials=2, storage=db, progress=False).run()
    with pytest.raises(ConfigError, match="labels \\['width'\\]"):
        Experiment(SPACE, _training(lr=nn.ValueChoice([1, 2], label="width")), max_trials=2, storage=db,
                   progress=False).run()
    evaluator = FunctionEvaluator("tests.experiment_fixtures:parameter_count")
    Experiment(SPACE, evaluator, max_trials=1, storage=db, name="once", progress=False).run()
    with pytest.raises(ExperimentError, match="already exists"):
        Experiment(SPACE, evaluator, max_trials=1, storage=db, name="once", progress=False).run()
    with pytest.raises(UnknownExperimentError, match="known: once"):
        Experiment(SPACE, evaluator, max_trials=1, storage=db, name="twice").top(1)
    with pytest.raises(ExperimentError, match="no rank 2"):
        Experiment(SPACE, evaluator, max_trials=1, storage=db, name="once").export(2, str(tmp_path / "x"))
    assert all(issubclass(e, IRError) for e in (ConfigError, ExperimentError, UnknownExperimentError))


def test_a_factory_that_returns_a_model_space_needs_no_example_inputs(tmp_path):
    evaluator = FunctionEvaluator("tests.experiment_fixtures:parameter_count")
    Experiment(SpaceSpec("tests.experiment_fixtures:tiny_space"), evaluator, "grid", max_trials=4,
               storage=str(tmp_path / "e.db"), name="ready", progress=False).run()
    values = sorted(t.value for t in _study(tmp_path / "e.db", "ready").trials)
    expected = sorted(_parameters({"width": w, "op": o}) for w in (4, 8) for o in ("conv", "pool"))
    assert values == expected


def test_max_duration_stops_proposing_and_lets_the_started_trials_finish(tmp_path):
    path = tmp_path / "timed.db"
    evaluator = FunctionEvaluator("tests.experiment_fixtures:slow_count", delay=0.4)
    Experiment(SPACE, evaluator, "random", max_duration=1.0, concurrency=1, storage=str(path), name="timed",
               progress=False).run()
    trials = _study(path, "timed").trials
    assert 1 <= len(trials) <= 3  # about 1.0 s / 0.4 s each, never the whole space of 4
    assert {t.state.name for t in trials} == {"COMPLETE"}


def test_optunas_journal_file_works_as_the_store_too(tmp_path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = tmp_path / "runs.log"
    evaluator = FunctionEvaluator("tests.experiment_fixtures:parameter_count")
    experiment = Experiment(SPACE, evaluator, "grid", max_trials=4, concurrency=2, storage=str(path),
                            name="journal", progress=False)
    experiment.run()
    study = optuna.load_study(study_name="journal", storage=JournalStorage(JournalFileBackend(str(path))))
    assert sorted(t.value for t in study.trials) == sorted(
        _parameters({"width": w, "op": o}) for w in (4, 8) for o in ("conv", "pool"))
    assert [r.number for r in experiment.top(2)] == [t.number for t in sorted(
        study.trials, key=lambda t: (-t.value, t.number))[:2]]


def test_a_cuda_device_index_the_machine_lacks_is_refused_before_any_work(monkeypatch):
    from retiarii_ir.runtime.experiments.experiment import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # one GPU, simulated
    assert check_device("cuda:0") == "cuda:0" and check_device("cuda") == "cuda"
    with pytest.raises(ConfigError, match="has 1 CUDA device"):
        check_device("cuda:3")
