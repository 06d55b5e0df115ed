"""One-shot search on spaces it was not tuned for: warm-up, the architecture split, DARTS's
collapse guard, ProxylessNAS and a BatchNorm after a gate, one meaning of ``alphas()``,
NNI's sample format, and the latency table calibrated to whole models."""

from __future__ import annotations

import warnings

import pytest
import torch

import retiarii_ir
from retiarii_ir import codegen
from retiarii_ir.strategies.oneshot import DARTS, ENAS, SPOS, LatencyTable, OneShotError, ProxylessNAS, Supernet
from retiarii_ir.strategies.oneshot.base import nni_sample
from retiarii_ir.strategies.oneshot.batchnorm import batch_statistics
from retiarii_ir.strategies.oneshot.collapse import CollapseGuard, parameter_free_candidates
from retiarii_ir.strategies.oneshot.mixed import Gate, OneShotWarning
from retiarii_ir.strategies.oneshot.shape_checks import gates_before_batchnorm

from test_oneshot import ViewThenOpSpace, _space


METHODS = {
    "darts": (DARTS, "_arch_step"),
    "enas": (ENAS, "_controller_step"),
    "proxyless": (ProxylessNAS, "_arch_step"),
}


# ---------------------------------------------------------------------- warm-up
def _steps_in_order(cls, arch_step: str, digits, **setting) -> tuple[list[str], list[dict]]:
    """'w' for each weight step and 'a' for each architecture step, in the order they ran."""
    search = cls(*_space(), epochs=1, batch_size=32, seed=0, **setting)
    events, reports = [], []
    weight_step, paths_step, step = search.weight_step, search.paths_step, getattr(search, arch_step)
    search.weight_step = lambda *a: events.append("w") or weight_step(*a)
    search.paths_step = lambda *a: events.append("w") or paths_step(*a)
    setattr(search, arch_step, lambda *a: events.append("a") or step(*a))
    search.progress = reports.append
    search.fit(*digits)  # 128 examples for the weights: 4 batches of 32 per epoch
    return events, reports


@pytest.mark.parametrize("name", list(METHODS))
@pytest.mark.parametrize("setting, weight_steps", [({"warmup_steps": 3}, 3), ({"warmup_epochs": 2}, 2 * 4)])
def test_warmup_trains_the_weights_alone_before_any_architecture_step(name, setting, weight_steps, digits):
    cls, arch_step = METHODS[name]
    plain, _ = _steps_in_order(cls, arch_step, digits, warmup_epochs=0)
    warmed, reports = _steps_in_order(cls, arch_step, digits, **setting)
    assert warmed == ["w"] * weight_steps + plain, (plain[:6], warmed[:14])
    warmups = [r for r in reports if r.get("phase") == "warmup"]
    assert warmups and warmups[-1]["steps"] == weight_steps


def test_darts_warmup_leaves_the_architecture_weights_as_they_were(digits):
    search = DARTS(*_space(), epochs=1, batch_size=32, seed=0, warmup_epochs=2)
    initial = {label: t.detach().clone() for label, t in search.logits.items()}
    seen = []
    search.progress = lambda r: seen.append({k: t.detach().clone() for k, t in search.logits.items()}) \
        if r.get("phase") == "warmup" else None
    weights = [p.detach().clone() for p in search.supernet.parameters()]
    search.fit(*digits)
    assert len(seen) == 2 and all(torch.equal(s[k], initial[k]) for s in seen for k in initial)
    assert any(not torch.equal(a, b) for a, b in zip(weights, search.supernet.parameters()))


def test_warmup_settings_that_make_no_sense_are_project_errors():
    space, model = _space()
    with pytest.raises(OneShotError, match="no warm-up"):
        SPOS(space, model, warmup_epochs=1)
    with pytest.raises(OneShotError, match="not both"):
        DARTS(space, model, warmup_epochs=1, warmup_steps=3)
    with pytest.raises(OneShotError, match="whole number >= 0"):
        ENAS(space, model, warmup_steps=-1)
    assert DARTS(space, model).warmup_epochs == 2 and SPOS(space, model).warmup_epochs == 0


# ---------------------------------------------------------------------- split
def _tagged(n: int, sign: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose first pixel tells which set (and which row) they came from."""
    x = torch.rand(n, 1, 8, 8)
    x[:, 0, 0, 0] = sign * (torch.arange(n) + 1.0)
    return x, torch.randint(0, 10, (n,))


def test_a_separate_architecture_set_decides_the_architecture_and_never_trains_the_weights():
    search = DARTS(*_space(), epochs=2, batch_size=16, seed=0, warmup_steps=2)
    (x, y), (ax, ay) = _tagged(64, 1.0), _tagged(32, -1.0)
    weight_rows, arch_rows = [], []
    weight_step, arch_step = search.weight_step, search._arch_step
    search.weight_step = lambda a, b: weight_rows.append(a[:, 0, 0, 0]) or weight_step(a, b)
    search._arch_step = lambda a, b: arch_rows.append(a[:, 0, 0, 0]) or arch_step(a, b)
    search.fit(x, y, ax, ay)
    weight_rows, arch_rows = torch.cat(weight_rows), torch.cat(arch_rows)
    assert (weight_rows > 0).all() and (arch_rows < 0).all()
    assert set(arch_rows.tolist()) == set((-torch.arange(1, 33.0)).tolist())  # all of it, in batches of 16
    assert torch.equal(search.arch_split[0], ax)


def test_arch_fraction_sets_the_share_of_the_data_that_decides_the_architecture(digits):
    search = SPOS(*_space(), epochs=1, batch_size=32, population=2, generations=1, parents=1, arch_fraction=0.25)
    search.fit(*digits)
    assert (len(search.weight_split[0]), len(search.arch_split[0])) == (192, 64)


def test_bad_splits_are_project_errors(digits):
    space, model = _space()
    with pytest.raises(OneShotError, match="arch_fraction"):
        DARTS(space, model, arch_fraction=1.0)
    with pytest.raises(OneShotError, match="both arch_x and arch_y"):
        DARTS(space, model, epochs=1).fit(*digits, arch_x=digits[0])
    with pytest.raises(OneShotError, match="one for the architecture"):
        DARTS(space, model, epochs=1, batch_size=32).fit(*digits, digits[0][:8], digits[1][:8])


# ---------------------------------------------------------------------- collapse guard
def test_parameter_free_candidates_are_found_per_label():
    space, model = _space()
    assert parameter_free_candidates(Supernet(space, model)) == {"op": [1]}  # 'pool'; 'conv' has weights


def test_the_guard_stops_when_a_parameter_free_candidate_takes_a_lead_and_keeps_the_epoch_before():
    space, model = _space()
    guard = CollapseGuard(Supernet(space, model), space.choices())
    conv_leads = {"op": torch.tensor([0.3, 0.1]), "width": torch.tensor([0.0, 1.0])}
    still_conv = {"op": torch.tensor([0.4, 0.35]), "width": torch.tensor([1.0, 0.0])}
    pool_leads = {"op": torch.tensor([0.4, 0.5]), "width": torch.tensor([0.0, 1.0])}
    assert guard.observe(conv_leads) is None
    assert guard.observe(still_conv) is None  # a label without a parameter-free candidate may change freely
    verdict = guard.observe(pool_leads)
    assert verdict["labels"] == ["op"] and verdict["candidates"] == ["pool"]
    assert torch.equal(verdict["restore"]["op"], still_conv["op"])


def test_a_parameter_free_lead_from_the_first_epoch_on_is_not_a_collapse():
    space, model = _space()
    guard = CollapseGuard(Supernet(space, model), space.choices())
    assert guard.observe({"op": torch.tensor([0.1, 0.3])}) is None
    assert guard.observe({"op": torch.tensor([0.1, 0.4])}) is None


def _scripted(search: DARTS, script: list[list[float]]) -> None:
    """Each search epoch sets the 'op' logits to the next row of ``script`` (no training)."""
    def epoch(index, weight_batches, arch_batches):
        with torch.no_grad():
            search.logits["op"].copy_(torch.tensor(script[index]))
        return {"loss": 0.0}
    search._train_epoch = epoch


def test_darts_stops_at_a_collapse_and_exports_what_led_before_it_and_the_switch_turns_it_off(digits):
    script = [[0.2, 0.1], [0.5, 0.2], [0.5, 0.9], [0.1, 2.0], [0.1, 3.0]]  # pool overtakes in epoch 3
    guarded = DARTS(*_space(), epochs=5, batch_size=32, warmup_epochs=0)
    _scripted(guarded, script)
    guarded.fit(*digits)
    assert guarded.export()["op"] == "conv"
    assert guarded.stopped["epoch"] == 3 and guarded.stopped["labels"] == ["op"]
    assert torch.equal(guarded.logits["op"].detach(), torch.tensor(script[1]))
    assert len([r for r in guarded.history if "phase" not in r]) == 3
    free = DARTS(*_space(), epochs=5, batch_size=32, warmup_epochs=0, collapse_guard=False)
    _scripted(free, script)
    free.fit(*digits)
    assert free.export()["op"] == "pool" and free.stopped is None


# ---------------------------------------------------------------------- ProxylessNAS and a BatchNorm after a gate
def _one_hot(space, sample) -> dict[str, Gate]:
    gates = {}
    for label, values in space.choices().items():
        weights = torch.zeros(len(values))
        weights[values.index(sample[label])] = 1.0
        gates[label] = Gate(weights.requires_grad_(True), list(range(len(values))))
    return gates


def test_a_batchnorm_after_a_gate_zeroes_the_active_gate_gradient_on_batch_statistics_only(digits):
    space, model = _space(ViewThenOpSpace)
    supernet = Supernet(space, model)
    x, y = digits[0][:64], digits[1][:64]
    with supernet.gated(_one_hot(space, {"view": 0, "op": "conv"})):
        supernet(x)  # running statistics of this path
    grads = {}
    for mode in ("batch", "running"):
        gates = _one_hot(space, {"view": 0, "op": "conv"})
        supernet.train(mode == "batch")
        with supernet.gated(gates):
            loss = torch.nn.functional.cross_entropy(supernet(x), y)
        grads[mode] = torch.autograd.grad(loss, [gates["op"].weights])[0]
    gates = _one_hot(space, {"view": 0, "op": "conv"})
    with batch_statistics(supernet), supernet.gated(gates):
        loss = torch.nn.functional.cross_entropy(supernet(x), y)
    grads["path"] = torch.autograd.grad(loss, [gates["op"].weights])[0]
    assert abs(grads["batch"][0]) < 0.05 * abs(grads["batch"][1])  # active path: about 0 (BatchNorm eps aside)
    assert abs(grads["running"][0]) > 0.2 * abs(grads["running"][1])
    # the path's own statistics held constant: the active gate keeps a gradient (a tenth of the other's
    # here, against a hundredth on batch statistics)
    assert abs(grads["path"][0]) > 0.05 * abs(grads["path"][1])


def test_gates_that_feed_a_batchnorm_are_found_through_the_mixed_ops_between():
    space, model = _space(ViewThenOpSpace)
    supernet = Supernet(space, model)
    found = gates_before_batchnorm(supernet, _one_hot(space, {"view": 1, "op": "pool"}), torch.randn(2, 1, 8, 8))
    assert found == {"view": "norm", "op": "norm"}
    tiny_space, tiny = _space()  # its BatchNorms sit inside candidates or before every choice
    assert gates_before_batchnorm(Supernet(tiny_space, tiny), _one_hot(tiny_space, tiny_space.random_sample(0) | {
        "kernel": 1}), torch.randn(2, 1, 8, 8)) == {}


def test_proxyless_warns_about_that_shape_only_when_its_fix_is_turned_off(digits):
    space, model = _space(ViewThenOpSpace)
    gates = dict(epochs=1, batch_size=32, warmup_epochs=0, arch_gradient="gates")
    with pytest.warns(OneShotWarning, match=r"'op' -> 'norm', 'view' -> 'norm'.*arch_batchnorm='path'"):
        ProxylessNAS(space, model, arch_batchnorm="batch", **gates).fit(*digits)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OneShotWarning)
        for mode in ("path", "running"):
            search = ProxylessNAS(space, model, arch_batchnorm=mode, **gates).fit(*digits)
            assert search.before_batchnorm == {"view": "norm", "op": "norm"}
    with pytest.raises(OneShotError, match="arch_batchnorm"):
        ProxylessNAS(space, model, arch_batchnorm="frozen")


# ---------------------------------------------------------------------- alphas() and the export
SEARCHES = {
    "darts": lambda s, m: DARTS(s, m, epochs=2, batch_size=32, arch_lr=0.05, seed=0, collapse_guard=False),
    "enas": lambda s, m: ENAS(s, m, epochs=1, batch_size=32, derive_samples=2, seed=0),
    "spos": lambda s, m: SPOS(s, m, epochs=1, batch_size=32, population=4, generations=2, parents=2, seed=0),
    "proxyless": lambda s, m: ProxylessNAS(s, m, epochs=2, batch_size=32, arch_lr=0.1, seed=0),
}


@pytest.mark.parametrize("name", list(SEARCHES))
def test_alphas_are_a_probability_per_plain_candidate_for_every_method(name, digits):
    space, model = _space()
    search = SEARCHES[name](space, model).fit(*digits)
    alphas = search.alphas()
    choices = space.choices()
    assert alphas and set(alphas) <= set(choices)
    for label, probs in alphas.items():
        assert list(probs) == [tuple(v) if isinstance(v, list) else v for v in choices[label]]  # e.g. 'conv', not '"conv"'
        assert all(0.0 <= p <= 1.0 for p in probs.values())
        assert sum(probs.values()) == pytest.approx(1.0)
    if name in ("darts", "proxyless"):
        for label, t in search.logits.items():
            assert list(alphas[label].values()) == pytest.approx(torch.softmax(t.detach(), 0).tolist())
    if name != "enas":  # ENAS exports the best-rewarded subnet it derived, which need not be the greedy one
        sample = space.validate(search.export())
        assert all(max(alphas[label], key=alphas[label].get) == sample[label] for label in sample)


def test_spos_exports_the_best_scored_architecture_it_evaluated_and_reports_that_score(digits):
    space, model = _space()
    reports = []
    search = SPOS(space, model, epochs=1, batch_size=32, population=4, generations=2, parents=2, seed=1,
                  progress=reports.append).fit(*digits)
    best_score = max(acc for acc, _ in search.scores.values())
    assert search.score(space.validate(search.export())) == best_score
    assert reports[-1]["phase"] == "export" and reports[-1]["best_acc"] == best_score
    assert len(search.scores) > 1


def test_spos_evolution_scores_only_new_architectures_each_on_the_same_recalibration_batches(digits):
    space, model = _space()  # 36 architectures
    search = SPOS(space, model, epochs=1, batch_size=32, population=4, generations=3, parents=2, seed=1)
    scored, recalibrations = [], []
    accuracy = search.accuracy

    def spy(sample, x, y, recalibrate=None, **kwargs):
        scored.append(space.search_space.sample_key(sample))
        recalibrations.append(recalibrate)
        return accuracy(sample, x, y, recalibrate=recalibrate, **kwargs)

    search.accuracy = spy
    search.fit(*digits)
    # every generation brings `population` architectures not scored before: 4 + 3 x 4, none twice
    assert len(scored) == len(set(scored)) == 16
    assert all(r is recalibrations[0] for r in recalibrations)
    search.fit(*digits)  # new weights: the scores of the first fit no longer hold
    assert len(search.scores) == 16 and len(scored) == 32


def test_spos_scores_a_space_no_larger_than_its_budget_whole(digits):
    space, model = _space()  # 36 architectures; 12 x (2 + 1) = 36 scores
    search = SPOS(space, model, epochs=1, batch_size=32, population=12, generations=2, parents=2, seed=0).fit(*digits)
    assert sorted(search.scores) == sorted(space.search_space.sample_key(s) for s in space.search_space.grid())
    best = max(acc for acc, _ in search.scores.values())
    assert search.score(space.validate(search.export())) == best


@pytest.mark.parametrize("setting", [{"population": 0}, {"parents": 0}, {"generations": -1}, {"population": 2.5},
                                     {"recalibration_batches": 0}, {"mutation_prob": 1.5}])
def test_spos_evolution_settings_that_make_no_sense_are_project_errors(setting):
    with pytest.raises(OneShotError, match=next(iter(setting))):
        SPOS(*_space(), **setting)


# ---------------------------------------------------------------------- NNI's sample format
def test_a_choice_nested_under_an_input_choice_stays_active_in_nni_format():
    from retiarii_ir.space.hub import DartsSpace

    space = retiarii_ir.trace_space(DartsSpace(c=4, num_nodes=2), torch.randn(2, 3, 8, 8))
    sample = space.random_sample(0)
    nni = nni_sample(space, sample)
    assert any(isinstance(v, list) for v in nni.values())
    assert space.validate(nni) == sample
    space.freeze(nni)


def test_an_input_choice_of_one_exports_a_list_and_freezes_as_its_index(digits):
    space, model = _space()
    sample = DARTS(space, model, epochs=1, batch_size=32, seed=0).fit(*digits).export()
    assert isinstance(sample["skip"], list) and len(sample["skip"]) == 1
    plain = {**sample, "skip": sample["skip"][0]}
    assert codegen.to_source(space.freeze(sample)) == codegen.to_source(space.freeze(plain))
    with pytest.raises(retiarii_ir.errors.InvalidSampleError):
        space.validate({**plain, "skip": [0, 1]})  # a list of two is not a candidate of an InputChoice of one


# ---------------------------------------------------------------------- latency calibration
def test_calibration_fits_whole_model_times_and_keeps_the_summed_ones():
    space, model = _space()
    table = LatencyTable.measure(Supernet(space, model), torch.randn(1, 1, 8, 8), repeats=2, calibrate=0)
    samples = [space.random_sample(seed) for seed in range(5)]
    summed = [table.summed(s) for s in samples]
    assert len(set(summed)) > 1
    table.calibrate(samples, lambda s: 0.5 * table.summed(s) + 0.1)  # whole models: half the sum, plus 0.1 ms
    assert (table.calibration.scale, table.calibration.offset) == (pytest.approx(0.5), pytest.approx(0.1))
    for sample, raw in zip(samples, summed):
        assert table.of_sample(sample) == pytest.approx(0.5 * raw + 0.1)
        assert table.summed(sample) == raw
    probs = {label: torch.full((len(v),), 1.0 / len(v)) for label, v in space.choices().items()}
    assert table.expected(probs).item() == pytest.approx(0.5 * table.expected_summed(probs).item() + 0.1)
    report = table.report()
    assert "measured = 0.500 x summed + 0.100 ms" in report and f"{summed[0]:.3f} |" in report


def test_calibration_with_one_summed_value_is_the_ratio_of_means():
    space, model = _space()
    table = LatencyTable.measure(Supernet(space, model), torch.randn(1, 1, 8, 8), repeats=2, calibrate=0)
    sample = space.random_sample(0)
    table.calibrate([sample, sample], lambda s: 2.0 * table.summed(s))
    assert (table.calibration.scale, table.calibration.offset) == (pytest.approx(2.0), 0.0)


def test_measure_times_whole_models_for_its_calibration():
    space, model = _space()
    table = LatencyTable.measure(Supernet(space, model), torch.randn(1, 1, 8, 8), repeats=3, calibrate=3)
    points = table.calibration.points
    assert len(points) == 3 and all(p["measured_ms"] > 0 and p["summed_ms"] > 0 for p in points)
    assert table.calibration.scale > 0
