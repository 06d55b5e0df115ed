"""A space's frozen, pretrained weights: every trial starts from them and never trains them,
merged or alone, and the factory that loads them takes its arguments from the experiment."""

import json
import os

import optuna
import pytest
import torch
import torch.nn.functional as F

import retiarii_ir as ir
from retiarii_ir import nn
from retiarii_ir.runtime import Classification, Experiment, FunctionEvaluator, SpaceSpec
from retiarii_ir.runtime.errors import ConfigError, ExperimentError
from tests.experiment_fixtures import FrozenStemSpace


@pytest.fixture(scope="module")
def stem_file(tmp_path_factory):
    """A 'pretrained' stem: values no initialisation would give (so a re-initialised or
    trained stem cannot pass for it)."""
    path = tmp_path_factory.mktemp("stem") / "stem.pt"
    torch.save({"weight": torch.linspace(-1, 1, 6 * 9).reshape(6, 1, 3, 3), "bias": torch.full((6,), 0.25)}, path)
    return str(path)


def _study(path, name):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{path}")


def test_the_factory_gets_the_specs_kwargs_and_they_survive_the_trip_to_a_worker(stem_file):
    spec = SpaceSpec("tests.experiment_fixtures:FrozenStemSpace", inputs=[(2, 1, 8, 8)],
                     kwargs={"stem": stem_file, "classes": 3})
    again = SpaceSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and again.kwargs == {"stem": stem_file, "classes": 3}
    space = again.build()
    graph = space.freeze({"width": 4})
    assert graph.modules["head"].kwargs["out_features"] == 3
    assert SpaceSpec("tests.experiment_fixtures:FrozenStemSpace", inputs=[(2, 1, 8, 8)]).to_dict()["kwargs"] == {}


@pytest.mark.parametrize("kwargs, message", [
    ({"stem": ("a", "b")}, "would come back as"),          # a tuple comes back from JSON as a list
    ({1: "x"}, "dict of keyword names"),
    ({"not a name": 1}, "dict of keyword names"),
    ({"scale": float("nan")}, "plain JSON values"),
    ({"stem": object()}, "plain JSON values"),
    (["stem"], "dict of keyword names"),
])
def test_kwargs_that_would_not_reach_a_worker_unchanged_are_refused_up_front(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SpaceSpec("tests.experiment_fixtures:FrozenStemSpace", inputs=[(2, 1, 8, 8)], kwargs=kwargs)


def test_a_traced_space_keeps_exactly_its_frozen_parameters_as_they_were(stem_file):
    model = FrozenStemSpace(stem_file)
    space = ir.trace_space(model, torch.randn(2, 1, 8, 8))
    expected = torch.load(stem_file, weights_only=True)
    assert sorted(space.frozen_weights) == ["stem.bias", "stem.weight"]
    assert torch.equal(space.frozen_weights["stem.weight"], expected["weight"])
    with torch.no_grad():
        model.stem.weight.zero_()  # the space keeps its own copy
    assert torch.equal(space.frozen_weights["stem.weight"], expected["weight"])
    for width in (4, 8):
        state = space.frozen_state(space.freeze({"width": width}))
        assert sorted(state) == ["stem.bias", "stem.weight"]
    assert ir.trace_space(torch.nn.Linear(2, 2), torch.randn(1, 2)).frozen_weights == {}


def test_a_frozen_weight_whose_shape_a_sample_changes_is_not_claimed():
    """A frozen layer whose width is searched has no single pretrained value to start from."""

    @nn.model_wrapper
    class Searched(nn.Module):
        def __init__(self):
            super().__init__()
            width = nn.ValueChoice([3, 4], label="width")
            self.fc = nn.Linear(2, width)
            self.fc.requires_grad_(False)

        def forward(self, x):
            return self.fc(x)

    space = ir.trace_space(Searched(), torch.randn(1, 2))
    traced_width = space.frozen_weights["fc.weight"].shape[0]
    other = 4 if traced_width == 3 else 3
    with pytest.warns(UserWarning, match="a choice changes the shape of 'fc.weight'"):
        assert space.frozen_state(space.freeze({"width": other})) == {}


def _run(tmp_path, stem_file, name, cross_model, lr=0.05):
    path = tmp_path / f"{name}.db"
    spec = SpaceSpec("tests.experiment_fixtures:FrozenStemSpace", inputs=[(2, 1, 8, 8)], kwargs={"stem": stem_file})
    Experiment(spec, Classification("digits", epochs=1, max_steps=4, lr=lr), "grid", max_trials=2, concurrency=2,
               storage=str(path), name=name, cross_model=cross_model, passes=("dedup", "cse"), progress=False).run()
    return _study(path, name).trials


def test_every_trial_starts_from_the_frozen_stem_and_never_trains_it_merged_or_alone(tmp_path, stem_file):
    expected = torch.load(stem_file, weights_only=True)
    merged = _run(tmp_path, stem_file, "merged", True)
    alone = _run(tmp_path, stem_file, "alone", False)
    assert [t.user_attrs["trained_as"] for t in merged] == ["merged with 2"] * 2
    for trial in merged + alone:
        weights = torch.load(trial.user_attrs["checkpoint"], weights_only=True)
        assert torch.equal(weights["stem.weight"], expected["weight"]) and torch.equal(weights["stem.bias"],
                                                                                          expected["bias"])
    # the searched layers did train (else the stem check above says nothing): against the same
    # run with a learning rate of 0, which leaves every weight where it started
    untrained = _run(tmp_path, stem_file, "still", True, lr=0.0)
    for trained, start in zip(merged, untrained):
        weights, initial = (torch.load(t.user_attrs["checkpoint"], weights_only=True) for t in (trained, start))
        assert torch.equal(initial["stem.weight"], expected["weight"])
        assert not torch.equal(weights["body.weight"], initial["body.weight"])
    assert {json.dumps(t.params): t.value for t in merged} == {json.dumps(t.params): t.value for t in alone}


def test_a_function_evaluator_gets_the_frozen_stem_not_training(tmp_path, stem_file):
    import tests.experiment_fixtures as fixtures

    fixtures.SEEN_FROZEN.clear()
    spec = SpaceSpec("tests.experiment_fixtures:FrozenStemSpace", inputs=[(2, 1, 8, 8)], kwargs={"stem": stem_file})
    Experiment(spec, FunctionEvaluator("tests.experiment_fixtures:spy_frozen"), "grid", max_trials=1,
               storage=str(tmp_path / "fn.db"), name="fn", progress=False).run()
    seen = list(fixtures.SEEN_FROZEN)
    assert len(seen) == 1
    assert torch.equal(seen[0]["weight"], torch.load(stem_file, weights_only=True)["weight"])
    assert seen[0]["trains"] is False and seen[0]["body_trains"] is True


def test_a_tied_frozen_weight_keeps_its_value_under_both_names_merged_or_alone(tmp_path):
    """Both names of one tensor are frozen: a trial that reset the second name from its seed, or
    a merge that untied them, would train or lose the pretrained 0.5."""
    spec = SpaceSpec("tests.experiment_fixtures:TiedFrozenSpace", inputs=[(2, 1, 8, 8)])
    space = spec.build()
    assert sorted(space.frozen_state(space.freeze({"width": 8}))) == ["a.weight", "b.weight"]
    for cross_model in (True, False):
        name = f"tied{cross_model}"
        Experiment(spec, Classification("digits", epochs=1, max_steps=3, lr=0.5), "grid", max_trials=2,
                   concurrency=2, storage=str(tmp_path / "t.db"), name=name, cross_model=cross_model,
                   progress=False).run()
        for trial in _study(tmp_path / "t.db", name).trials:
            weights = torch.load(trial.user_attrs["checkpoint"], weights_only=True)
            assert weights["a.weight"].flatten().tolist() == [0.5] == weights["b.weight"].flatten().tolist(), name


class _Candidates(nn.Module):
    """Two frozen candidates: freezing renames the first's conv ``op.0.1`` to ``op.1``, the
    second's own name."""

    def __init__(self):
        super().__init__()
        first, second = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Conv2d(1, 4, 3, padding=1)
        with torch.no_grad():
            first.weight.fill_(1.0)
            second.weight.fill_(2.0)
        self.op = nn.LayerChoice([nn.Sequential(nn.ReLU(), first), second], label="op")
        self.op.requires_grad_(False)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(torch.flatten(F.adaptive_avg_pool2d(self.op(x), 1), 1))


def test_frozen_weights_inside_a_choice_are_never_given_to_another_candidate():
    space = ir.trace_space(nn.model_wrapper(_Candidates)(), torch.randn(2, 1, 8, 8))
    graph = space.freeze({"op": 0})
    assert "op.1.weight" in ir.build_module(graph).state_dict()  # the name the second candidate had
    with pytest.warns(UserWarning, match=r"frozen weights of 'op.1' are not carried .*inside the choice 'op'"):
        assert space.frozen_state(graph) == {}
    assert space.frozen_state(space.freeze({"op": 1})) == {}


def test_a_frozen_layer_comes_all_or_none_when_a_choice_changes_one_of_its_shapes():
    @nn.model_wrapper
    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            width = nn.ValueChoice([4, 8], label="width")
            self.body = nn.Linear(2, width)
            self.head = nn.Linear(width, 3)
            self.head.requires_grad_(False)

        def forward(self, x):
            return self.head(self.body(x))

    space = ir.trace_space(Head(), torch.randn(1, 2))
    traced = space.frozen_weights["head.weight"].shape[1]
    assert sorted(space.frozen_state(space.freeze({"width": traced}))) == ["head.bias", "head.weight"]
    with pytest.warns(UserWarning, match="a choice changes the shape of 'head.weight'"):
        assert space.frozen_state(space.freeze({"width": 12 - traced})) == {}  # not the bias alone


def test_a_changed_weights_file_is_read_again_and_resume_refuses_it(tmp_path, stem_file):
    path = tmp_path / "stem.pt"
    path.write_bytes(open(stem_file, "rb").read())
    spec = SpaceSpec("tests.experiment_fixtures:FrozenStemSpace", inputs=[(2, 1, 8, 8)], kwargs={"stem": str(path)})
    first = spec.build()
    experiment = Experiment(spec, Classification("digits", epochs=1, max_steps=2), "grid", max_trials=1,
                            storage=str(tmp_path / "e.db"), name="e", progress=False)
    experiment.run()
    torch.save({"weight": torch.zeros(6, 1, 3, 3), "bias": torch.zeros(6)}, path)
    again = spec.build()  # not the build cached before the file changed
    assert torch.equal(again.frozen_weights["stem.weight"], torch.zeros(6, 1, 3, 3))
    assert first.frozen_fingerprint() != again.frozen_fingerprint()
    with pytest.raises(ExperimentError, match="other frozen .pretrained. weights"):
        Experiment(spec, Classification("digits", epochs=1, max_steps=2), "grid", max_trials=2,
                   storage=str(tmp_path / "e.db"), name="e", progress=False).resume()


def test_a_worker_whose_frozen_weights_differ_from_the_experiments_fails_its_trials(tmp_path, stem_file):
    from retiarii_ir.runtime.references import Trust
    from retiarii_ir.runtime.experiments.worker import WorkerContext, run_job

    spec = SpaceSpec("tests.experiment_fixtures:FrozenStemSpace", inputs=[(2, 1, 8, 8)], kwargs={"stem": stem_file})
    space = spec.build()
    job = {"space": spec.to_dict(), "evaluator": FunctionEvaluator("tests.experiment_fixtures:parameter_count").to_dict(),
           "model_space": space.search_space.to_json(), "frozen_weights": "0" * 64,
           "trials": [{"number": 0, "sample": {"width": 4}, "trial_id": 1}]}
    context = WorkerContext("unused", str(tmp_path), Trust.of(packages=["tests"]))
    out = json.loads(run_job(json.dumps(job), context))["trials"][0]
    assert out["status"] == "failed" and "frozen (pretrained) weights built here differ" in out["error"]


def test_export_needs_no_pretrained_file_the_trial_carries_its_frozen_weights(tmp_path, stem_file):
    """Export reads the trial's graph and weights, not the space: deleting the pretrained file
    the space loaded changes nothing, and the exported weights hold the pretrained stem."""
    from retiarii_ir.runtime.experiments.export import export
    from retiarii_ir.runtime.experiments.store import Store

    path = tmp_path / "stem.pt"
    path.write_bytes(open(stem_file, "rb").read())
    spec = SpaceSpec("tests.experiment_fixtures:FrozenStemSpace", inputs=[(2, 1, 8, 8)], kwargs={"stem": str(path)})
    Experiment(spec, Classification("digits", epochs=1, max_steps=2), "grid", max_trials=1,
               storage=str(tmp_path / "e.db"), name="e", progress=False).run()
    path.unlink()
    store = Store(str(tmp_path / "e.db"), create=False)
    paths = export(store, "e", 1, str(tmp_path / "out"))
    assert os.path.isfile(paths["onnx"]) and os.path.isfile(paths["model"])
    assert torch.equal(torch.load(paths["weights"], weights_only=True)["stem.weight"],
                       torch.load(stem_file, weights_only=True)["weight"])


def test_a_space_spec_is_hashable_and_its_kwargs_read_only():
    spec = SpaceSpec("tests.experiment_fixtures:FrozenStemSpace", inputs=[(2, 1, 8, 8)], kwargs={"classes": 3})
    same = SpaceSpec.from_dict(spec.to_dict())
    assert len({spec, same}) == 1
    with pytest.raises(TypeError):
        spec.kwargs["classes"] = 4
