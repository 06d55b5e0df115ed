"""Batching's timed choice, remembered: identical runs choose alike and time nothing twice; a
cache that is garbled or cannot be written costs a timing, never a run. And what batching
promises: first-step losses within rtol 1e-5 of training alone, final accuracy within 0.5
points on a workload that is not chaotic."""

import sqlite3
import warnings

import pytest
import torch
from torch import nn

import retiarii_ir as ir
from retiarii_ir.optimizer import PASSES, DataSpec, TrainConfig, Trial
from retiarii_ir.runtime.training import autotune, decisions, train_trials
from retiarii_ir.runtime.training import trainer as trainer_module


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.max_pool2d(torch.relu(self.conv(x)), 2), 1))


def _trials(count: int = 3, steps: int = 3, epochs: int = 1, lr: float = 0.05) -> list[Trial]:
    torch.manual_seed(0)
    graph = ir.trace(SmallCNN(), torch.randn(2, 1, 8, 8))
    return [Trial(f"t{k}", graph, DataSpec("digits", batch_size=32),
                  TrainConfig(lr=lr * (1 + k / 4), epochs=epochs, max_steps=steps, seed=k)) for k in range(count)]


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """A cache folder of its own, and a process that remembers nothing yet."""
    monkeypatch.setenv("RETIARII_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(decisions, "_MEMORY", {})
    return tmp_path / "cache" / decisions.FILE_NAME


@pytest.fixture
def timings(monkeypatch):
    """Counts of what was timed: training steps (the batching choice) and convolution groups."""
    counts = {"step": 0, "conv": 0}
    real_step, real_conv = trainer_module._GroupRun._step_seconds, autotune._time_grouped_conv

    def step(self, *args, **kwargs):
        counts["step"] += 1
        return real_step(self, *args, **kwargs)

    def conv(*args, **kwargs):
        counts["conv"] += 1
        return real_conv(*args, **kwargs)

    monkeypatch.setattr(trainer_module._GroupRun, "_step_seconds", step)
    monkeypatch.setattr(autotune, "_time_grouped_conv", conv)
    return counts


def test_identical_runs_make_identical_choices_and_a_warm_run_times_nothing(fresh_cache, timings, monkeypatch):
    first = train_trials(_trials(), PASSES)
    # three rounds of batched and unbatched steps (and of every layer fused, where the timed
    # convolution choice left some unfused), and the convolution group's own timing
    assert timings["step"] in (6, 9) and timings["conv"] >= 1
    assert all(r.batching.startswith(("kept: timed now", "off: timed now")) for r in first)
    assert fresh_cache.exists()
    for _ in range(2):  # as a new process would: nothing in memory, the file remembers
        monkeypatch.setattr(decisions, "_MEMORY", {})
        before = dict(timings)
        again = train_trials(_trials(), PASSES)
        assert timings == before
        assert [r.batching.split(":")[0] for r in again] == [r.batching.split(":")[0] for r in first]
        assert all("remembered (a step took" in r.batching for r in again)
        assert [r.losses for r in again] == [r.losses for r in first]
        assert len(again.plans) == 1 and bool(again.plans[0].batched) == first[0].batching.startswith("kept")


def test_the_remembered_choice_is_the_one_trained_with(fresh_cache, monkeypatch):
    """A stored "off" makes the run plan without batching, whatever timing would say now."""
    key = autotune.batched_step_key(_trials(), PASSES)
    decisions.decide("batched_step", key, "cpu", lambda: ("off", "stored by hand"), choices=("kept", "off"))
    monkeypatch.setattr(decisions, "_MEMORY", {})
    results = train_trials(_trials(), PASSES)
    assert all(r.batching == "off: remembered (stored by hand)" for r in results)
    assert not results.plans[0].batched and "batch" not in results.plans[0].passes


def test_a_different_model_is_a_different_choice(fresh_cache, timings):
    train_trials(_trials(), PASSES)
    wider = _trials()
    torch.manual_seed(0)
    graph = ir.trace(nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)), torch.randn(2, 1, 8, 8))
    wider = [Trial(t.name, graph, t.data, t.train) for t in wider]
    before = timings["step"]
    train_trials(wider, PASSES)
    assert timings["step"] >= before + 6


def test_a_garbled_cache_entry_is_timed_again(fresh_cache, timings, monkeypatch):
    train_trials(_trials(), PASSES)
    with sqlite3.connect(fresh_cache) as db:
        db.execute("UPDATE decisions SET choice = 7")
    monkeypatch.setattr(decisions, "_MEMORY", {})
    before = timings["step"]
    results = train_trials(_trials(), PASSES)
    assert timings["step"] >= before + 6 and "timed now" in results[0].batching


def test_a_cache_that_cannot_be_written_warns_once_and_training_goes_on(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("RETIARII_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr(decisions, "_MEMORY", {})
    monkeypatch.setattr(decisions, "_WARNED", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = train_trials(_trials(), PASSES)
    assert all(r.status == "succeeded" for r in results)
    messages = {str(w.message) for w in caught if "timed-choice cache" in str(w.message)}
    assert messages and all("RETIARII_CACHE_DIR" in m or "timing again" in m for m in messages)


def test_a_corrupt_cache_file_is_read_as_empty(fresh_cache, monkeypatch):
    fresh_cache.parent.mkdir(parents=True)
    fresh_cache.write_bytes(b"this is not a database" * 100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = train_trials(_trials(), PASSES)
    assert all(r.status == "succeeded" and "timed now" in r.batching for r in results)


def test_batching_keeps_its_stated_contract_on_a_calm_workload():
    """First-step losses within rtol 1e-5 of alone, final accuracy within 0.5 points: the
    promise the docs make (per-step closeness after many steps is not promised)."""
    trials = _trials(count=4, steps=None, epochs=2, lr=0.02)
    batched = train_trials(trials, PASSES, autotune=False)
    alone = train_trials(trials, independent=True)
    assert batched.plans[0].batched  # the layers really were batched
    for b, a in zip(batched, alone):
        assert b.status == a.status == "succeeded" and len(b.losses) == len(a.losses) > 40
        assert b.losses[0] == pytest.approx(a.losses[0], rel=1e-5)
        assert abs(b.metric - a.metric) <= 0.005


def test_a_stored_choice_nested_past_the_decoder_is_timed_again_and_the_group_stays_whole(fresh_cache, monkeypatch):
    train_trials(_trials(), PASSES)
    with sqlite3.connect(fresh_cache) as db:
        db.execute("UPDATE decisions SET choice = ?", ("[" * 100_000 + "]" * 100_000,))
    monkeypatch.setattr(decisions, "_MEMORY", {})
    results = train_trials(_trials(), PASSES)
    assert all(r.trained_as == "merged with 3" and "timed now" in r.batching for r in results)
    monkeypatch.setattr(decisions, "_MEMORY", {})
    assert all("remembered" in r.batching for r in train_trials(_trials(), PASSES))  # the row was repaired


def test_a_corrupt_cache_file_is_set_aside_and_a_fresh_cache_remembers_again(fresh_cache, monkeypatch):
    fresh_cache.parent.mkdir(parents=True)
    garbage = b"this is not a database" * 100
    fresh_cache.write_bytes(garbage)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        choice, how = decisions.decide("anything", {"k": 1}, "cpu", lambda: (True, "measured"))
    assert (choice, how) == (True, "timed now (measured)")
    (aside,) = fresh_cache.parent.glob(fresh_cache.name + ".unreadable-*")
    assert aside.read_bytes() == garbage  # kept, not deleted
    assert [str(w.message) for w in caught if str(aside) in str(w.message)]
    monkeypatch.setattr(decisions, "_MEMORY", {})  # as a new process would
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fresh cache reads without a warning
        assert decisions.decide("anything", {"k": 1}, "cpu", lambda: (False, "again")) == \
            (True, "remembered (measured)")


def test_a_cache_table_of_another_layout_is_set_aside_too(fresh_cache):
    fresh_cache.parent.mkdir(parents=True)
    with sqlite3.connect(fresh_cache) as db:
        db.execute("CREATE TABLE decisions (digest TEXT PRIMARY KEY, verdict TEXT)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        decisions.decide("anything", {"k": 2}, "cpu", lambda: (True, "measured"))
    with sqlite3.connect(fresh_cache) as db:
        assert db.execute("SELECT choice, detail FROM decisions").fetchall() == [("true", "measured")]
    assert len(list(fresh_cache.parent.glob(fresh_cache.name + ".unreadable-*"))) == 1


def test_a_corrupt_cache_that_cannot_be_moved_says_to_delete_it(fresh_cache, monkeypatch):
    fresh_cache.parent.mkdir(parents=True)
    fresh_cache.write_bytes(b"this is not a database" * 100)

    def refuse(*args):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(decisions.os, "replace", refuse)  # as in a folder the user may not write
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert decisions.decide("anything", {"k": 3}, "cpu", lambda: (True, "measured"))[0] is True
    messages = " ".join(str(w.message) for w in caught)
    assert "not a cache this version writes" in messages and "delete it" in messages
