"""Each executor runs a real experiment; a trial that crashes, hangs or kills its worker fails
with its reason while the others finish. The Ray tests use a real local Ray cluster."""

import json
import os

import optuna
import pytest

import retiarii_ir as ir
from retiarii_ir import nn
from retiarii_ir.runtime import Classification, Experiment, FunctionEvaluator, InProcess, ProcessPool, SpaceSpec
from tests.experiment_fixtures import TinySpace

SPACE = SpaceSpec("tests.experiment_fixtures:TinySpace", inputs=[(2, 1, 8, 8)])
BEHAVIOURS = nn.ValueChoice(["ok", "crash", "hang", "die"], label="behaviour")


def _trials(path, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{path}").trials


def _parameters(sample):
    with ir.fixed_arch({k: sample[k] for k in ("width", "op")}):
        return sum(p.numel() for p in TinySpace().parameters())


def _check_failures_stay_alone(trials, died: str):
    """Grid order: one trial of each behaviour, in the order ok, crash, hang, die."""
    assert len(trials) == 4
    by_behaviour = {}
    for t in trials:
        by_behaviour.setdefault(t.params["behaviour"], []).append(t)
    assert sorted(by_behaviour) == ["crash", "die", "hang", "ok"]
    for t in by_behaviour["ok"]:
        assert t.state.name == "COMPLETE" and t.value == _parameters(t.params)
    for t in by_behaviour["crash"]:
        assert t.state.name == "FAIL" and t.user_attrs["failure"] == "ValueError: this trial crashes on purpose"
    for t in by_behaviour["hang"]:
        assert t.state.name == "FAIL" and t.user_attrs["failure"].startswith("timed out")
    for t in by_behaviour["die"]:
        assert t.state.name == "FAIL" and died in t.user_attrs["failure"]


def test_process_pool_survives_crashing_hanging_and_dying_trials(tmp_path):
    path = tmp_path / "pool.db"
    Experiment(SPACE, FunctionEvaluator("tests.experiment_fixtures:behave", behaviour=BEHAVIOURS), "grid",
               max_trials=4, concurrency=2, executor=ProcessPool(2, threads=1), trial_timeout=4,
               storage=str(path), name="pool", progress=False).run()
    _check_failures_stay_alone(_trials(path, "pool"), "worker process died (killed by SIGKILL")


def test_retries_run_a_failed_trial_again_and_keep_each_reason(tmp_path):
    path = tmp_path / "retry.db"
    Experiment(SPACE, FunctionEvaluator("tests.experiment_fixtures:behave", behaviour="crash"), "grid",
               max_trials=2, concurrency=2, retries=2, storage=str(path), name="retry", progress=False).run()
    for t in _trials(path, "retry"):
        assert t.state.name == "FAIL" and t.user_attrs["attempts"] == 3
        assert t.user_attrs["failure_1"] == t.user_attrs["failure_2"] == t.user_attrs["failure"]


def test_in_process_executor_fails_a_hung_trial_at_its_timeout(tmp_path):
    path = tmp_path / "hang.db"
    behaviour = nn.ValueChoice(["hang", "ok"], label="behaviour")
    Experiment(SPACE, FunctionEvaluator("tests.experiment_fixtures:behave", behaviour=behaviour), "grid",
               max_trials=2, concurrency=1, trial_timeout=1.5, executor=InProcess(), storage=str(path),
               name="hang", progress=False).run()
    states = {t.params["behaviour"]: (t.state.name, t.user_attrs.get("failure", "")) for t in _trials(path, "hang")}
    assert states["ok"][0] == "COMPLETE"
    assert states["hang"][0] == "FAIL" and states["hang"][1].startswith("timed out after 1.5s")


def test_merged_training_in_a_process_pool_matches_in_process(tmp_path):
    training = Classification("digits", epochs=1, max_steps=3, lr=nn.ValueChoice([1e-2, 1e-3], label="lr"))
    for name, executor in (("here", InProcess()), ("pool", ProcessPool(2, threads=1))):
        Experiment(SPACE, training, "grid", max_trials=8, concurrency=4, executor=executor,
                   storage=str(tmp_path / f"{name}.db"), name=name, progress=False).run()
    here = {json.dumps(t.params, sort_keys=True): t.value for t in _trials(tmp_path / "here.db", "here")}
    pool = {json.dumps(t.params, sort_keys=True): t for t in _trials(tmp_path / "pool.db", "pool")}
    assert {k: t.value for k, t in pool.items()} == here and len(here) == 8
    assert {t.user_attrs["trained_as"] for t in pool.values()} == {"merged with 2"}  # 4 in flight over 2 workers


@pytest.fixture(scope="module")
def ray_module():
    ray = pytest.importorskip("ray", reason="the Ray executor is the optional extra [ray]")
    assert not ray.is_initialized()
    return ray


def test_ray_executor_on_a_local_cluster_it_starts_and_stops(ray_module, tmp_path):
    from retiarii_ir.runtime import Ray

    training = Classification("digits", epochs=1, max_steps=3, lr=nn.ValueChoice([1e-2, 1e-3], label="lr"))
    Experiment(SPACE, training, "grid", max_trials=8, concurrency=4, executor=InProcess(),
               storage=str(tmp_path / "here.db"), name="here", progress=False).run()
    Experiment(SPACE, training, "grid", max_trials=8, concurrency=4, executor=Ray(workers=2),
               storage=str(tmp_path / "ray.db"), name="ray", progress=False).run()
    assert not ray_module.is_initialized(), "the executor stops the cluster it started"
    here = {json.dumps(t.params, sort_keys=True): t.value for t in _trials(tmp_path / "here.db", "here")}
    remote = {json.dumps(t.params, sort_keys=True): t for t in _trials(tmp_path / "ray.db", "ray")}
    assert {k: t.value for k, t in remote.items()} == here and len(here) == 8
    assert {t.user_attrs["trained_as"] for t in remote.values()} == {"merged with 2"}
    assert all(os.path.isfile(t.user_attrs["checkpoint"]) for t in remote.values())


def test_ray_executor_survives_crashing_hanging_and_dying_trials(ray_module, tmp_path):
    from retiarii_ir.runtime import Ray

    path = tmp_path / "ray.db"
    Experiment(SPACE, FunctionEvaluator("tests.experiment_fixtures:behave", behaviour=BEHAVIOURS), "grid",
               max_trials=4, concurrency=2, executor=Ray(workers=2), trial_timeout=4,
               storage=str(path), name="ray", progress=False).run()
    _check_failures_stay_alone(_trials(path, "ray"), "Ray task failed")


def test_a_trial_that_kills_its_merged_group_fails_alone_and_the_others_are_trained_again(tmp_path):
    path = tmp_path / "group.db"
    data = nn.ValueChoice(["digits", "tests.experiment_fixtures:deadly_data"], label="data")
    training = Classification(data, epochs=1, max_steps=2)
    Experiment(SPACE, training, "grid", max_trials=2, concurrency=2, executor=ProcessPool(1, threads=1),
               storage=str(path), name="group", progress=False).run()
    by_data = {t.params["data"]: t for t in _trials(path, "group")}  # grid: width 4, conv, each data set
    survivor, killer = by_data["digits"], by_data["tests.experiment_fixtures:deadly_data"]
    assert survivor.state.name == "COMPLETE" and survivor.user_attrs["trained_as"] == "alone"
    assert survivor.user_attrs["note"].startswith("re-run alone after its group failed: worker process died")
    assert killer.state.name == "FAIL" and "killed by SIGKILL" in killer.user_attrs["failure"]
