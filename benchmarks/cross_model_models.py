"""The models and data sets of ``benchmarks/cross_model.py``: four workloads a user would run
on scikit-learn's digits, each a function ``trials(K, steps)`` that gives K trials.

(a) ``pipeline``: K different small CNNs behind the user's own on-disk data pipeline (the worked
    example of ``docs/examples/images``: PNG files decoded with Pillow, random resized crop,
    flip and normalise, in DataLoader workers). Merged, the K trials read one loader; alone,
    each trial has its own, as a user runs it today.
(b) ``heads``: classification heads of different widths and learning rates fine-tuned on one
    frozen, briefly pretrained ResNet-18-layout backbone (half width) at 32x32.
(c) ``lr_sweep``: one small CNN on 8x8 digits at K learning rates.
(d) ``mobilenet``: samples of the MobileNetV3-style space of ``retiarii_ir.space.hub`` at 16x16, the
    input size that space is written for.
(e) ``eval heads``: (b) as a user fine-tuning heads writes it: only the backbone's parameters
    frozen, and the backbone in eval mode (``frozen_mode="eval"``).
(f) ``filter bank``: K small CNNs behind one fixed filter bank read directly as a buffer.

Each workload also names the part of one trial that merging can share (``shared_part``),
so the benchmark can time it against the trial's whole step (for (a), the data's part is the
step minus the model's step on a batch already in memory).
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import retiarii_ir as ir
from retiarii_ir.optimizer import DataSpec, TrainConfig, Trial
from retiarii_ir.runtime.training import data as rdata

BATCH = 64
NUM_FILTERS = 12


# ---------------------------------------------------------------------- data
def digits_rgb(size: int) -> Callable[[], rdata.Dataset]:
    """Digits upsampled to size x size (bilinear) with three equal channels: the input layout
    of ImageNet-style networks."""

    def load() -> rdata.Dataset:
        base = rdata.dataset("digits")

        def up(x: torch.Tensor) -> torch.Tensor:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            return x.expand(-1, 3, -1, -1).contiguous()

        return rdata.Dataset(up(base.train_x), base.train_y, up(base.val_x), base.val_y)

    return load


rdata.register_dataset("digits32rgb", digits_rgb(32))
rdata.register_dataset("digits16rgb", digits_rgb(16))


def data_spec(dataset: str) -> DataSpec:
    return DataSpec(dataset=dataset, batch_size=BATCH, shuffle_seed=0, drop_last=True)


def train_config(steps: int, dataset: str, lr: float, seed: int) -> TrainConfig:
    """SGD with momentum for ``steps`` steps (whole epochs beyond one epoch)."""
    per_epoch = rdata.steps_per_epoch(data_spec(dataset))
    epochs = max(1, math.ceil(steps / per_epoch))
    return TrainConfig(optimizer="sgd", lr=lr, momentum=0.9, epochs=epochs,
                       max_steps=steps if epochs == 1 else None, seed=seed)


def state_with(graph: ir.Graph, seed: int, fixed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The graph's fresh weights from ``seed``, with the ``fixed`` entries put in."""
    torch.manual_seed(seed)
    state = ir.build_module(graph).state_dict()
    state.update({k: v.clone() for k, v in fixed.items()})
    return state


# ---------------------------------------------------------------------- (a) an on-disk data pipeline
PNG_FACTORY = str(Path(__file__).resolve().parents[1] / "docs" / "examples" / "images" / "pngdata.py") + ":make"
PNG_SIZE = 128  # stored images (decoded each time an item is read); the models see 16x16 crops
LOADER_WORKERS = 2


def png_root() -> str:
    """The benchmark's PNG folder (written once, under the temp dir), shared by every process."""
    return os.path.join(tempfile.gettempdir(), f"retiarii-bench-digits-png{PNG_SIZE}")


def png_spec() -> DataSpec:
    return DataSpec(PNG_FACTORY, batch_size=BATCH, shuffle_seed=0, drop_last=True, num_workers=LOADER_WORKERS,
                    persistent_workers=True, kwargs={"root": png_root(), "size": PNG_SIZE, "crop": 16})


class PipelineCNN(nn.Module):
    """One conv (width and kernel vary per trial), pooling and a linear head: a cheap model, so
    the data pipeline is most of a step."""

    def __init__(self, width: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, width, kernel, stride=2, padding=kernel // 2)
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(F.adaptive_avg_pool2d(torch.relu(self.conv(x)), 1), 1))


def pipeline_trials(k_trials: int, steps: int) -> list[Trial]:
    from retiarii_ir.runtime.training import open_source

    open_source(png_spec()).close()  # the factory writes the PNG folder once, before any trial runs
    per_epoch = rdata.steps_per_epoch(png_spec())
    epochs = max(1, math.ceil(steps / per_epoch))
    trials = []
    for k in range(k_trials):
        width, kernel = (4, 6, 8, 12)[k % 4], (3, 5)[k // 4 % 2]
        torch.manual_seed(k)
        graph = ir.trace(PipelineCNN(width, kernel), torch.randn(2, 1, 16, 16))
        config = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, epochs=epochs,
                             max_steps=steps if epochs == 1 else None, seed=k)
        trials.append(Trial(f"cnn{k}", graph, png_spec(), config, initial_state=state_with(graph, k, {})))
    return trials


# ---------------------------------------------------------------------- (b) heads on a frozen backbone
def make_backbone() -> nn.Module:
    """ResNet-18's layout ([2, 2, 2, 2] basic blocks) at half its width, 256 features."""
    from retiarii_ir.runtime.models import BasicBlock, ResNet

    backbone = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=10, width=32)
    backbone.fc = nn.Identity()
    return backbone


class BackboneWithHead(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.backbone = make_backbone()
        self.head = nn.Sequential(nn.Linear(256, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def pretrained_backbone(steps: int = 22) -> dict[str, torch.Tensor]:
    """The backbone after one epoch of SGD on digits (with a throw-away linear head)."""
    torch.manual_seed(0)
    model = nn.Sequential(make_backbone(), nn.Linear(256, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for step, (x, y) in enumerate(rdata.batches(data_spec("digits32rgb"), epoch=99)):
        if step == steps:
            break
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return {f"backbone.{k}": v.detach().clone() for k, v in model[0].state_dict().items()}


HEAD_WIDTHS = (64, 128, 256)
HEAD_LRS = (0.01, 0.03, 0.1)
_BACKBONE: dict[str, torch.Tensor] = {}
_HEAD_GRAPHS: dict[int, ir.Graph] = {}


def head_trials(k_trials: int, steps: int) -> list[Trial]:
    if not _BACKBONE:
        _BACKBONE.update(pretrained_backbone())
    trials = []
    for k in range(k_trials):
        hidden, lr = HEAD_WIDTHS[k % 3], HEAD_LRS[(k // 3) % 3]
        if hidden not in _HEAD_GRAPHS:
            torch.manual_seed(0)
            _HEAD_GRAPHS[hidden] = ir.trace(BackboneWithHead(hidden), (torch.rand(2, 3, 32, 32),))
        graph = _HEAD_GRAPHS[hidden]
        trials.append(Trial(f"head{hidden}_lr{lr}_{k}", graph, data_spec("digits32rgb"),
                            train_config(steps, "digits32rgb", lr, k), frozen=tuple(_BACKBONE),
                            initial_state=state_with(graph, k, _BACKBONE)))
    return trials


def heads_shared(state: dict[str, torch.Tensor]) -> nn.Module:
    module = make_backbone()
    module.load_state_dict({k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")})
    return module.requires_grad_(False)


# ---------------------------------------------------------------------- (e) heads on an eval-mode backbone
def eval_head_trials(k_trials: int, steps: int) -> list[Trial]:
    """(b)'s heads with only the backbone's parameters frozen, and the backbone in eval mode, as a
    user fine-tuning heads writes it: its batch norms use the pretrained running statistics."""
    trials = head_trials(k_trials, steps)
    parameters = {k for k, _ in make_backbone().named_parameters()}
    return [Trial(t.name, t.graph, t.data, t.train, frozen=tuple(k for k in t.frozen if k[len("backbone."):] in parameters),
                  initial_state=t.initial_state, frozen_mode="eval") for t in trials]


def eval_heads_shared(state: dict[str, torch.Tensor]) -> nn.Module:
    return heads_shared(state).eval()


# ---------------------------------------------------------------------- (f) a fixed filter bank read directly
BANK_FILTERS = 24


class FilterBankCNN(nn.Module):
    """A fixed bank of 5x5 filters (a buffer read with ``F.conv2d``, the usual way to write a
    fixed augmentation or feature filter) in front of a small CNN that trains."""

    def __init__(self, width: int) -> None:
        super().__init__()
        torch.manual_seed(1234)  # every trial's bank holds the same filters
        self.register_buffer("bank", torch.randn(BANK_FILTERS, 3, 5, 5) / 5)
        self.conv = nn.Conv2d(BANK_FILTERS, width, 3, stride=2, padding=1)
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(F.conv2d(x, self.bank, padding=2))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(torch.relu(self.conv(x)), 1), 1))


def filter_bank_trials(k_trials: int, steps: int) -> list[Trial]:
    trials = []
    for k in range(k_trials):
        width = (16, 24, 32)[k % 3]
        torch.manual_seed(k)
        graph = ir.trace(FilterBankCNN(width), torch.rand(2, 3, 32, 32))
        trials.append(Trial(f"bank{k}_w{width}", graph, data_spec("digits32rgb"), train_config(steps, "digits32rgb", 0.05, k),
                            frozen=("bank",), initial_state=state_with(graph, k, {})))
    return trials


class _Bank(nn.Module):
    def __init__(self, bank: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("bank", bank)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(F.conv2d(x, self.bank, padding=2))


def filter_bank_shared(state: dict[str, torch.Tensor]) -> nn.Module:
    return _Bank(state["bank"])


# ---------------------------------------------------------------------- (c) one CNN, K learning rates
class SmallCNN(nn.Module):
    """Two 3x3 convolutions (32, 64 channels), 2x2 max pooling, a 128-unit hidden layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 4 * 4, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


def sweep_lrs(k_trials: int) -> list[float]:
    """K learning rates evenly spaced in log between 0.003 and 0.3 (0.03 alone)."""
    if k_trials == 1:
        return [0.03]
    return [0.003 * 100 ** (k / (k_trials - 1)) for k in range(k_trials)]


def lr_sweep_trials(k_trials: int, steps: int) -> list[Trial]:
    torch.manual_seed(0)
    model = SmallCNN()
    graph = ir.trace(model, (torch.rand(2, 1, 8, 8),))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return [Trial(f"lr{lr:.4f}", graph, data_spec("digits"), train_config(steps, "digits", lr, 0),
                  initial_state=state) for lr in sweep_lrs(k_trials)]


# ---------------------------------------------------------------------- (d) MobileNetV3-style samples
_SPACE_CACHE: dict[str, ir.ModelSpace] = {}


def _space(name: str, build: Callable[[], nn.Module], example: torch.Tensor) -> ir.ModelSpace:
    """A space traced once per process."""
    if name not in _SPACE_CACHE:
        torch.manual_seed(0)
        _SPACE_CACHE[name] = ir.trace_space(build(), example)
    return _SPACE_CACHE[name]


def mobilenet_space() -> ir.ModelSpace:
    from retiarii_ir.space.hub import MobileNetV3Space

    def build() -> nn.Module:
        model = MobileNetV3Space()
        for m in model.modules():  # dropout's draws cannot match between merged and alone runs
            if isinstance(m, nn.Dropout):
                m.p = 0.0
        return model

    return _space("mobilenet", build, torch.rand(2, 3, 16, 16))


def mobilenet_trials(k_trials: int, steps: int) -> list[Trial]:
    space = mobilenet_space()
    trials = []
    for k in range(k_trials):
        graph = space.freeze(space.random_sample(2000 + k))
        trials.append(Trial(f"mbv3_{k}", graph, data_spec("digits16rgb"), train_config(steps, "digits16rgb", 0.05, k),
                            initial_state=state_with(graph, k, {})))
    return trials


# ---------------------------------------------------------------------- the table of workloads
@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    trials: Callable[[int, int], list[Trial]]
    shared: Callable[[dict[str, torch.Tensor]], nn.Module] | None  # the part computed once (sharing)
    data: bool = False  # the shared part is the data pipeline (read once merged)

    @property
    def sharing(self) -> bool:
        return self.shared is not None or self.data


WORKLOADS = {
    "a": Workload("a", "K small CNNs behind one on-disk pipeline: PNG decode, random crop, flip, normalise in "
                       f"{LOADER_WORKERS} DataLoader workers (input dedup: one loader merged, one per trial alone)",
                  pipeline_trials, None, data=True),
    "b": Workload("b", "K heads (3 widths x 3 learning rates) on one frozen ResNet-18-layout backbone, 32x32 (CSE)",
                  head_trials, heads_shared),
    "c": Workload("c", "one small CNN, K learning rates (operator batching) vs torch.func.vmap",
                  lr_sweep_trials, None),
    "d": Workload("d", "K samples of the MobileNetV3-style space, 16x16 (operator batching)",
                  mobilenet_trials, None),
    "e": Workload("e", "K heads on (b)'s backbone with its parameters frozen and the backbone in eval mode "
                       "(frozen_mode='eval'; CSE shares it whole, batch norms included)",
                  eval_head_trials, eval_heads_shared),
    "f": Workload("f", f"K small CNNs behind one fixed bank of {BANK_FILTERS} 5x5 filters read directly as a buffer "
                       "(F.conv2d(x, self.bank)), 32x32 (CSE of a frozen buffer)",
                  filter_bank_trials, filter_bank_shared),
}
