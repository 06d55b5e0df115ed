"""The plan and the batching trainer on a CUDA device: fused kernels, timing-based choices and
per-trial checkpoints work there as on the CPU. Skipped where no CUDA device is present (CI);
run on a GPU machine with ``python -m pytest tests/test_trainer_cuda.py``."""

from __future__ import annotations

import math
import os

import pytest
import torch

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, before it starts

from retiarii_ir import codegen  # noqa: E402
from retiarii_ir import optimizer  # noqa: E402
import retiarii_ir as ir  # noqa: E402
from retiarii_ir.optimizer import DataSpec, TrainConfig, Trial  # noqa: E402
from retiarii_ir.runtime.training import data  # noqa: E402
from retiarii_ir.runtime.training import fusing_pays  # noqa: E402
from retiarii_ir.space.hub.digits import DigitsSpace  # noqa: E402
from retiarii_ir.runtime.training.trainer import train_trials  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")

ALL = ("dedup", "cse", "batch")
SAMPLES = [  # different architectures of one space, and different recipes
    ("sgd", {"width": 16, "op": "maxpool", "depth": 1}, dict(optimizer="sgd", lr=0.05, momentum=0.9, seed=1)),
    ("adam", {"width": 16, "op": "conv5x5", "depth": 1}, dict(optimizer="adam", lr=3e-3, seed=1)),
    ("adamw", {"width": 16, "op": "conv3x3", "depth": 1}, dict(optimizer="adamw", lr=3e-3, weight_decay=0.01)),
    ("wide", {"width": 32, "op": "conv3x3", "depth": 0}, dict(optimizer="adam", lr=1e-2, seed=3)),
]


@pytest.fixture(scope="module", autouse=True)
def exact_float32():
    """TF32 would round convolutions and matrix products differently in fused and separate kernels."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
             torch.are_deterministic_algorithms_enabled())
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.use_deterministic_algorithms(True)
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved[:2]
    torch.use_deterministic_algorithms(saved[2])


@pytest.fixture(scope="module")
def trials() -> list[Trial]:
    torch.manual_seed(0)
    space = ir.trace_space(DigitsSpace(), torch.randn(2, 1, 8, 8))
    return [Trial(name, space.freeze(sample), DataSpec(), TrainConfig(epochs=1, max_steps=20, **config))
            for name, sample, config in SAMPLES]


@pytest.fixture(scope="module")
def runs(trials):
    return {"alone": train_trials(trials, device="cuda", independent=True),
            "exact": train_trials(trials, ("dedup", "cse"), device="cuda"),
            "all": train_trials(trials, ALL, device="cuda")}


def test_the_plan_fuses_layers_on_cuda_and_the_merged_module_runs_there(trials):
    plan = optimizer.plan(trials, ALL, fuse=fusing_pays("cuda"))
    assert plan.batched, "nothing was batched"
    module = codegen.load(plan.graph, formatted=False)().cuda()
    outputs = module(*[torch.randn(5, 1, 8, 8, device="cuda") for _ in plan.graph.inputs])
    assert len(outputs) == len(trials)
    assert all(o.device.type == "cuda" and o.shape == (5, 10) for o in outputs)


def test_exact_passes_give_identical_losses_on_cuda(runs):
    for merged, alone in zip(runs["exact"], runs["alone"]):
        assert merged.status == alone.status == "succeeded", (merged.error, alone.error)
        assert merged.trained_as.startswith("merged") and len(merged.losses) == 20
        assert merged.losses == alone.losses, merged.name
        assert merged.metric == alone.metric, merged.name


def test_batching_on_cuda_keeps_its_contract(runs):
    """First-step losses within rtol 1e-5 of alone, final accuracy within half a point (later
    steps' losses drift apart as training amplifies rounding, alone as much as merged)."""
    for merged, alone in zip(runs["all"], runs["alone"]):
        assert merged.status == "succeeded", merged.error
        assert math.isclose(merged.losses[0], alone.losses[0], rel_tol=1e-5, abs_tol=1e-7), merged.name
        assert abs(merged.metric - alone.metric) <= 0.005, (merged.name, merged.metric, alone.metric)
    assert all(r.losses[-1] < r.losses[0] for r in runs["alone"])  # they really trained


def test_checkpoints_from_cuda_load_strictly_into_the_standalone_module_on_the_cpu(trials, runs):
    val = data.dataset("digits")
    for t, result in zip(trials, runs["all"]):
        module = codegen.load(t.graph, formatted=False)()
        module.load_state_dict({k: v.cpu() for k, v in result.state.items()}, strict=True)
        with torch.no_grad():
            accuracy = (module.eval()(val.val_x).argmax(1) == val.val_y).float().mean().item()
        assert abs(accuracy - result.metric) <= 1.5 / len(val.val_y), t.name


def test_an_experiment_on_cuda_records_checkpoints_that_load_on_the_cpu(tmp_path):
    from retiarii_ir.runtime import Classification, Experiment, SpaceSpec

    storage = str(tmp_path / "e.db")
    experiment = Experiment(SpaceSpec("retiarii_ir.space.hub.digits:DigitsSpace", inputs=[(2, 1, 8, 8)]),
                            Classification("digits", epochs=1, max_steps=3, optimizer="sgd", lr=0.05),
                            "random", max_trials=4, concurrency=4, passes=ALL, storage=storage, name="gpu",
                            device="cuda", progress=False)
    state = experiment.run()
    assert state.done == 4, state
    paths = experiment.export(1, str(tmp_path / "best"))
    weights = torch.load(paths["weights"], weights_only=True)
    assert all(t.device.type == "cpu" for t in weights.values())
