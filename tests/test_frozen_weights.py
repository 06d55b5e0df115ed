"""A space's frozen, pretrained weights: every trial starts from them and never trains them,
merged or alone, and the factory that loads them takes its arguments from the experiment."""

import json

import optuna
import pytest
import torch

import retiarii_ir as ir
from retiarii_ir import nn
from runtime import Classification, Experiment, FunctionEvaluator, SpaceSpec
from runtime.experiment_errors import ConfigError
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
    seen = []
    import tests.experiment_fixtures as fixtures

    original = fixtures.frozen_stem_state

    def spy(model):
        seen.append(original(model))
        return 1.0

    fixtures.spy_frozen = spy
    try:
        spec = SpaceSpec("tests.experiment_fixtures:FrozenStemSpace", inputs=[(2, 1, 8, 8)],
                         kwargs={"stem": stem_file})
        Experiment(spec, FunctionEvaluator("tests.experiment_fixtures:spy_frozen"), "grid", max_trials=1,
                   storage=str(tmp_path / "fn.db"), name="fn", progress=False).run()
    finally:
        del fixtures.spy_frozen
    assert len(seen) == 1
    assert torch.equal(seen[0]["weight"], torch.load(stem_file, weights_only=True)["weight"])
    assert seen[0]["trains"] is False and seen[0]["body_trains"] is True
