"""The user's own data pipeline: a map-style Dataset with random augmentation read through
DataLoader workers gives every trial the same batches alone and merged, for any num_workers;
every way the data can go wrong is one error naming the factory (and the item), failing only
the trials that read it; and no loader worker outlives its group."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import retiarii_ir as ir
from retiarii_ir.optimizer import PASSES, DataSpec, TrainConfig, Trial
from retiarii_ir.runtime.training import DataError, open_source, train_trials
from retiarii_ir.space.hub import DigitsSpace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG = os.path.join(ROOT, "docs", "examples", "images", "pngdata.py")
RECIPE = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, epochs=2, max_steps=4)


@pytest.fixture(scope="module")
def space():
    return ir.trace_space(DigitsSpace(), torch.randn(2, 1, 16, 16))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """The worked example's PNG folder (about 3,200 files), written once."""
    root = str(tmp_path_factory.mktemp("png") / "digits-png")
    open_source(DataSpec(f"{PNG}:make", kwargs={"root": root})).close()  # the factory writes it
    return root


def _trials(space, spec: DataSpec, count: int = 3, recipe: TrainConfig = RECIPE) -> list[Trial]:
    return [Trial(f"t{k}", space.freeze(space.random_sample(seed=k)), spec, recipe) for k in range(count)]


def _children() -> set[int]:
    """This process's live child processes (loader workers among them)."""
    listing = subprocess.run(["ps", "-o", "pid=,stat=,comm=", "--ppid", str(os.getpid())], capture_output=True,
                             text=True)
    return {int(pid) for pid, stat, command in (line.split(None, 2) for line in listing.stdout.splitlines())
            if not stat.startswith("Z") and command.strip() != "ps"}


# ---------------------------------------------------------------------- the same batches
@pytest.mark.parametrize("workers", [0, 2])
def test_merged_trials_see_the_augmented_batches_they_see_alone_bit_for_bit(space, images, workers):
    spec = DataSpec(f"{PNG}:make", batch_size=32, num_workers=workers, kwargs={"root": images})
    before = _children()
    merged = train_trials(_trials(space, spec), ("dedup", "cse"))
    alone = train_trials(_trials(space, spec), independent=True)
    assert [r.status for r in merged] == ["succeeded"] * 3 and merged[0].trained_as == "merged with 3"
    for m, a in zip(merged, alone):
        assert len(m.losses) == 8 and m.losses == a.losses  # every step, to the last bit
        assert m.metrics == a.metrics
    assert _children() <= before  # the loaders' workers are gone with their group


def test_batches_do_not_depend_on_how_many_workers_prepare_them(space, images):
    losses = {}
    for workers in (0, 2):
        spec = DataSpec(f"{PNG}:make", batch_size=32, num_workers=workers, kwargs={"root": images})
        losses[workers] = [r.losses for r in train_trials(_trials(space, spec, count=2), ("dedup", "cse"))]
    assert losses[0] == losses[2]


def test_each_epoch_augments_an_image_anew_and_the_same_way_every_time(images):
    source = open_source(DataSpec(f"{PNG}:make", batch_size=8, num_workers=2, kwargs={"root": images}))
    try:
        first = [next(source.epoch(e)) for e in (0, 1, 0)]
    finally:
        source.close()
    assert torch.equal(first[0][0], first[2][0]) and not torch.equal(first[0][0], first[1][0])
    plain = open_source(DataSpec(f"{PNG}:make", batch_size=8, kwargs={"root": images}))
    assert torch.equal(next(plain.epoch(0))[0], first[0][0])  # one worker or two: the same images


def test_augmentation_drawn_from_pythons_and_numpys_streams_is_seeded_per_item_too():
    small = ir.trace_space(DigitsSpace(num_classes=2), torch.randn(2, 1, 8, 8))
    spec = DataSpec("tests.data_fixtures:python_and_numpy_noise", batch_size=32, num_workers=2)
    merged = train_trials(_trials(small, spec, count=2), ("dedup", "cse"))
    alone = train_trials(_trials(small, DataSpec(spec.dataset, batch_size=32), count=2), independent=True)
    assert all(m.losses == a.losses for m, a in zip(merged, alone))
    source = open_source(spec)
    try:
        assert not torch.equal(next(source.epoch(0))[0], next(source.epoch(1))[0])
    finally:
        source.close()


def test_operator_batching_stays_close_to_training_alone(space, images):
    spec = DataSpec(f"{PNG}:make", batch_size=32, num_workers=2, kwargs={"root": images})
    batched = train_trials(_trials(space, spec), PASSES, autotune=False)
    alone = train_trials(_trials(space, spec), independent=True)
    for b, a in zip(batched, alone):
        torch.testing.assert_close(b.losses[0], a.losses[0], rtol=1e-5, atol=0)
        assert abs(b.metric - a.metric) <= 0.005


def test_a_users_loss_and_metric_by_reference_are_equal_alone_and_merged(space):
    recipe = TrainConfig(optimizer="adam", lr=1e-2, epochs=2, max_steps=5, loss="tests.data_fixtures:l1_loss",
                         metric="tests.data_fixtures:balanced_accuracy")
    spec = DataSpec("tests.data_fixtures:shapes", batch_size=32, num_workers=2)
    small = ir.trace_space(DigitsSpace(num_classes=2), torch.randn(2, 1, 8, 8))
    merged = train_trials(_trials(small, spec, recipe=recipe), ("dedup", "cse"))
    alone = train_trials(_trials(small, spec, recipe=recipe), independent=True)
    assert all(m.losses == a.losses and m.metrics == a.metrics for m, a in zip(merged, alone))
    plain = train_trials(_trials(small, spec, recipe=TrainConfig(**{**recipe.__dict__, "loss": "cross_entropy"})),
                         ("dedup", "cse"))
    assert merged[0].losses[0] != plain[0].losses[0]  # the user's loss was the one used
    assert 0 <= merged[0].metric <= 1


# ---------------------------------------------------------------------- bad input
GOOD = DataSpec("tests.data_fixtures:shapes", batch_size=32)


@pytest.mark.parametrize("spec, words", [
    (DataSpec("tests.data_fixtures:no_such_factory"), ["cannot find", "no_such_factory"]),
    (DataSpec("tests.data_fixtures:raising_factory"), ["tests.data_fixtures:raising_factory raised FileNotFoundError"]),
    (DataSpec("tests.data_fixtures:wrong_type"), ["wrong_type returned list", "(train, validation)"]),
    (DataSpec("tests.data_fixtures:failing", batch_size=32, kwargs={"how": "raise"}),
     ["tests.data_fixtures:failing: item 37 raised ValueError: cannot decode image 37"]),
    (DataSpec("tests.data_fixtures:failing", batch_size=32, num_workers=2, kwargs={"how": "raise"}),
     ["tests.data_fixtures:failing: item 37 raised ValueError"]),
    (DataSpec("tests.data_fixtures:failing", batch_size=32, kwargs={"how": "shape"}),
     ["item 37 is [1, 7, 8] float32, [] int64 where item", "is [1, 8, 8] float32, [] int64"]),
    (DataSpec("tests.data_fixtures:failing", batch_size=32, num_workers=2, kwargs={"how": "dtype"}),
     ["item 37 is [1, 8, 8] float64, [] int64"]),
    (DataSpec("tests.data_fixtures:shapes", batch_size=32, collate_fn="tests.data_fixtures:broken_collate"),
     ["collating items", "RuntimeError: this collate cannot"]),
    (DataSpec("tests.data_fixtures:own_random_state", batch_size=32),
     ["own_random_state: item 0 came out different", "item_generator()"]),
    (DataSpec("tests.data_fixtures:failing", batch_size=32, num_workers=2, kwargs={"how": "crash"}),
     ["tests.data_fixtures:failing: the data loader failed", "exited unexpectedly"]),
    (DataSpec("tests.data_fixtures:failing", batch_size=32, num_workers=1, timeout=2, kwargs={"how": "hang"}),
     ["tests.data_fixtures:failing: the data loader failed", "timed out after 2 seconds"]),
])
def test_bad_data_fails_the_trials_that_read_it_with_one_reason_and_the_others_go_on(spec, words):
    small = ir.trace_space(DigitsSpace(num_classes=2), torch.randn(2, 1, 8, 8))
    graph = small.freeze(small.random_sample(seed=0))
    recipe = TrainConfig(epochs=1)  # a whole epoch: the failing item is read, wherever the order puts it
    before = _children()
    bad, good = train_trials([Trial("bad", graph, spec, recipe), Trial("good", graph, GOOD, recipe)], ("dedup", "cse"))
    assert good.status == "succeeded", good.error
    assert bad.status == "failed" and bad.error.startswith("DataError: ") and len(bad.error.splitlines()) == 1
    for word in words:
        assert word in bad.error, (word, bad.error)
    assert _children() <= before


def test_a_data_error_is_a_project_error_when_reading_a_source_directly():
    with pytest.raises(DataError, match="wrong_type returned list"):
        open_source(DataSpec("tests.data_fixtures:wrong_type"))


def test_an_experiment_puts_trials_that_read_the_same_data_into_one_job(tmp_path):
    """Proposals alternate between two batch sizes; with two trials a job, each job holds one
    batch size, so every trial trains merged with the other that reads its batches."""
    from retiarii_ir import nn
    from retiarii_ir.runtime import Classification, Experiment, ProcessPool, SpaceSpec, Store

    evaluator = Classification("tests.data_fixtures:shapes", batch_size=nn.ValueChoice([16, 32], label="batch"),
                               epochs=1, max_steps=2)
    experiment = Experiment(SpaceSpec("tests.experiment_fixtures:TinySpace", inputs=[(2, 1, 8, 8)]), evaluator,
                            "grid", max_trials=4, concurrency=4, executor=ProcessPool(2, threads=1),
                            storage=str(tmp_path / "e.db"), name="groups", progress=False)
    experiment.run()
    store = Store(str(tmp_path / "e.db"), create=False)
    records = store.trials(store.study_id("groups"))
    assert [r.sample["batch"] for r in sorted(records, key=lambda r: r.number)] == [16, 32, 16, 32]
    assert {r.attrs["trained_as"] for r in records} == {"merged with 2"}
