"""Frozen state that merging shares: a buffer read directly (a fixed filter), a backbone kept in
eval mode while its heads train, and a traced model's own weights as every trial's start."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import retiarii_ir as ir
from retiarii_ir import optimizer
from retiarii_ir.optimizer import DataSpec, TrainConfig, Trial, TrialSpecError
from retiarii_ir.runtime.training import batches, train_trials

SPEC = DataSpec("digits", batch_size=32)
EXACT = ("dedup", "cse")


class Blurred(nn.Module):
    """A fixed blur read directly as a buffer (how a fixed filter or augmentation is written),
    then a layer that trains."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.register_buffer("blur", torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]).div(16)
                             .view(1, 1, 3, 3))
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.fc = nn.Linear(width, 10)

    def forward(self, x):
        x = F.conv2d(x, self.blur, padding=1)
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def _calls(plan, target):
    return [n for n in plan.graph.nodes if n.target == target]


def test_a_frozen_buffer_read_directly_is_shared_and_losses_stay_bit_identical():
    trials = []
    for k in range(3):
        torch.manual_seed(k)
        graph = ir.trace(Blurred(), torch.randn(2, 1, 8, 8))
        trials.append(Trial(f"t{k}", graph, SPEC, TrainConfig(lr=0.05 * (k + 1), seed=k, max_steps=4),
                            frozen=("blur",)))
    plan = optimizer.plan(trials, EXACT)
    assert len([n for n in plan.graph.nodes if n.op == "get_attr"]) == 1  # one blur for three trials
    assert len(_calls(plan, "torch.conv2d")) == 1  # and one blurring
    assert len([n for n in plan.graph.nodes if n.op == "call_module"]) == 6  # each trial's conv and fc
    merged = train_trials(trials, EXACT)
    alone = train_trials(trials, independent=True)
    for m, a in zip(merged, alone):
        assert m.status == a.status == "succeeded"
        assert m.losses == a.losses and len(m.losses) == 4


def test_buffers_of_different_values_are_not_shared():
    trials = []
    for k in range(2):
        graph = ir.trace(Blurred(), torch.randn(2, 1, 8, 8))
        state = {key: value.clone() for key, value in graph.weights.items()}
        state["blur"] = state["blur"] * (k + 1)  # a different filter per trial
        trials.append(Trial(f"t{k}", graph, SPEC, frozen=("blur",), initial_state=state))
    plan = optimizer.plan(trials, EXACT)
    assert len([n for n in plan.graph.nodes if n.op == "get_attr"]) == 2
    assert len(_calls(plan, "torch.conv2d")) == 2


class Backbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5))
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def _pretrained() -> Backbone:
    torch.manual_seed(0)
    model = Backbone()
    with torch.no_grad():  # running statistics a pretrained backbone would have
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model


def _head_trials(model: Backbone, count: int = 3, **options) -> list[Trial]:
    graph = ir.trace(model, torch.randn(2, 1, 8, 8))
    frozen = tuple(k for k, _ in model.named_parameters() if k.startswith("features"))
    return [Trial(f"head{k}", graph, SPEC, TrainConfig(lr=0.05 * (k + 1), momentum=0.9, seed=k, max_steps=5),
                  frozen=frozen, **options) for k in range(count)]


def _alone_in_eval_mode(model: Backbone, config: TrainConfig) -> tuple[list[float], dict]:
    """The head trained by hand in plain PyTorch, the backbone in eval mode, as a user does it."""
    copy = Backbone()
    copy.load_state_dict(model.state_dict())
    copy.train()
    copy.features.eval()
    copy.features.requires_grad_(False)
    sgd = torch.optim.SGD(copy.head.parameters(), lr=config.lr, momentum=config.momentum)
    losses = []
    for step, (x, y) in enumerate(batches(SPEC, 0)):
        if step == config.max_steps:
            break
        sgd.zero_grad()
        loss = F.cross_entropy(copy(x), y)
        loss.backward()
        sgd.step()
        losses.append(loss.item())
    return losses, copy.state_dict()


def test_an_eval_mode_backbone_is_shared_whole_and_equals_each_head_trained_alone_in_eval_mode():
    model = _pretrained()
    trials = _head_trials(model, frozen_mode="eval")
    plan = optimizer.plan(trials, EXACT)
    layers = [n.target for n in plan.graph.nodes if n.op == "call_module"]
    assert sorted(layers) == ["t0.features.0", "t0.features.1", "t0.features.2", "t0.features.3", "t0.features.4",
                              "t0.features.5", "t0.features.6", "t0.head", "t1.head", "t2.head"]
    assert set(plan.eval_layers) == {f"t0.features.{i}" for i in range(7)}
    results = train_trials(trials, EXACT)
    for trial, result in zip(trials, results):
        losses, state = _alone_in_eval_mode(model, trial.train)
        assert result.losses == losses  # bit for bit: dropout off, running statistics used
        assert torch.equal(result.state["head.weight"], state["head.weight"])
        for key in ("features.1.running_mean", "features.4.running_var"):  # used, not updated
            assert torch.equal(result.state[key], model.state_dict()[key])


def test_in_train_mode_the_same_backbone_updates_its_statistics():
    """The default, ``frozen_mode="train"``: batch norms normalise by the batch and update."""
    model = _pretrained()
    trial = _head_trials(model, count=1)[0]
    trial.train = TrainConfig(lr=0.05, seed=0, max_steps=2)
    model.features[6].p = 0.0  # no dropout draws: the check is about the statistics
    result = train_trials([trial], EXACT)[0]
    assert not torch.equal(result.state["features.1.running_mean"], model.state_dict()["features.1.running_mean"])


def test_a_module_named_to_run_in_eval_mode_and_one_that_is_not_a_module():
    model = _pretrained()
    graph = ir.trace(model, torch.randn(2, 1, 8, 8))
    trial = Trial("t", graph, SPEC, eval_modules=("features.1",))
    plan = optimizer.plan([trial], ())
    assert plan.eval_layers == ("t0.features.1",)
    module = plan.train_mode(ir.build_module(plan.graph))
    assert not module.get_submodule("t0.features.1").training and module.get_submodule("t0.features.4").training
    with pytest.raises(TrialSpecError, match=r"eval_modules \['features.9'\] are not modules"):
        optimizer.plan([Trial("t", graph, SPEC, eval_modules=("features.9",))], ())
    with pytest.raises(TrialSpecError, match="frozen_mode must be one of"):
        Trial("t", graph, SPEC, frozen_mode="frozen")


def test_eval_settings_survive_the_trial_json():
    trial = _head_trials(_pretrained(), count=1, frozen_mode="eval", eval_modules=("head",))[0]
    back = Trial.from_json(trial.to_json())
    assert (back.frozen_mode, back.eval_modules, back.frozen) == ("eval", ("head",), trial.frozen)


def test_a_trial_of_a_traced_model_starts_from_that_models_weights():
    torch.manual_seed(3)
    model = Blurred()
    graph = ir.trace(model, torch.randn(2, 1, 8, 8))
    trial = Trial("t", graph, SPEC, TrainConfig(lr=0.0, seed=7, max_steps=1))
    assert trial.starts_from == "traced model"
    result = train_trials([trial])[0]
    for key, value in model.state_dict().items():
        assert torch.equal(result.state[key], value), key
    # where it does not: a copy (made to be edited), a graph from JSON, a space's sample
    assert Trial("c", graph.copy(), SPEC, TrainConfig(seed=7)).starts_from == "seed 7"
    assert Trial("j", ir.Graph.from_json(graph.to_json()), SPEC).starts_from == "seed 0"
    space = ir.trace_space(_ChoiceNet(), torch.randn(2, 4))
    assert Trial("s", space.freeze(space.random_sample(seed=1)), SPEC).starts_from == "seed 0"
    seeded = train_trials([Trial("c", graph.copy(), SPEC, TrainConfig(lr=0.0, seed=7, max_steps=1))])[0]
    assert not torch.equal(seeded.state["conv.weight"], model.state_dict()["conv.weight"])


class _ChoiceNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = ir.nn.LayerChoice([nn.Linear(4, 4), nn.Sequential(nn.Linear(4, 4), nn.ReLU())], label="layer")

    def forward(self, x):
        return self.layer(x)


@pytest.mark.parametrize("frozen, words", [
    (("features.0",), ["frozen names ['features.0'] are not state_dict keys", "features.0.weight"]),
    (("features.0.wieght",), ["frozen names ['features.0.wieght'] are not state_dict keys"]),
])
def test_frozen_names_that_match_no_key_are_refused_not_ignored(frozen, words):
    graph = ir.trace(_pretrained(), torch.randn(2, 1, 8, 8))
    with pytest.raises(TrialSpecError) as caught:
        optimizer.plan([Trial("t", graph, SPEC, frozen=frozen, frozen_mode="eval")], EXACT)
    assert all(w in str(caught.value) for w in words), str(caught.value)
    result = train_trials([Trial("t", graph, SPEC, TrainConfig(max_steps=1), frozen=frozen)])[0]
    assert result.status == "failed" and "are not state_dict keys" in result.error


@pytest.mark.parametrize("field", ["frozen", "eval_modules"])
def test_frozen_and_eval_modules_must_be_lists_of_names(field):
    graph = ir.trace(Blurred(), torch.randn(2, 1, 8, 8))
    for bad in (None, "blur", {"blur": 1}, 3):
        with pytest.raises(TrialSpecError, match=f"{field} is a list of names"):
            Trial("t", graph, SPEC, **{field: bad})
