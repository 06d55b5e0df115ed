"""The model-space API: write a search space as an ordinary PyTorch model.

Example::

    import torch
    import retiarii_ir
    from retiarii_ir import nn                 # reads like torch.nn

    @nn.model_wrapper                          # stable automatic labels
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            width = nn.ValueChoice([8, 16], label="width")
            self.stem = nn.Conv2d(3, width, 3, padding=1)      # layers accept choices
            self.op = nn.LayerChoice({"conv": nn.Conv2d(width, width, 3, padding=1),
                                      "pool": nn.MaxPool2d(3, 1, 1)}, label="op")
            self.blocks = nn.Repeat(lambda i: nn.Sequential(nn.Conv2d(width, width, 1), nn.ReLU()),
                                    depth=(0, 2), label="depth")
            self.head = nn.Linear(width, 10)

        def forward(self, x):
            x = self.blocks(self.op(self.stem(x)))
            return self.head(x.mean((2, 3)))

    space = retiarii_ir.trace_space(Net(), torch.randn(2, 3, 8, 8))
    space.choices()          # {'width': [8, 16], 'op': ['conv', 'pool'], 'depth': [0, 1, 2]}
    sample = space.random_sample(seed=0)            # a plain, JSON-serialisable dict
    graph = space.freeze(sample)                    # concrete, typed Graph
    with retiarii_ir.fixed_arch(sample):
        model = Net()                               # plain nn.Module of the same architecture

``LayerChoice``, ``InputChoice``, ``ValueChoice`` (with arithmetic), ``Repeat`` and ``Cell``
follow NNI Retiarii. Every torch.nn layer is available here (``nn.Conv2d``, ``nn.BatchNorm2d``...)
and accepts ValueChoice arguments; given plain arguments it is the torch layer itself. A plain
torch.nn layer given a choice, or ``int()``/``bool()``/``range()``/a comparison on one, raises
``ValueChoiceMisuseError`` naming the ``retiarii_ir.nn`` layer to use instead.
"""

from __future__ import annotations

from torch import nn as _torch_nn

from .cell import Cell, LooseEndMerge
from .choices import ChosenInputs, InputChoice, LayerChoice, Repeat
from .context import model_wrapper
from .value_choice import ValueChoice, ValueExpr
from .wrapped import ValueChoiceLayer, wrap_layer

Conv1d = wrap_layer(_torch_nn.Conv1d)
Conv2d = wrap_layer(_torch_nn.Conv2d)
Conv3d = wrap_layer(_torch_nn.Conv3d)
Linear = wrap_layer(_torch_nn.Linear)
BatchNorm1d = wrap_layer(_torch_nn.BatchNorm1d)
BatchNorm2d = wrap_layer(_torch_nn.BatchNorm2d)
LayerNorm = wrap_layer(_torch_nn.LayerNorm)
GroupNorm = wrap_layer(_torch_nn.GroupNorm)
Dropout = wrap_layer(_torch_nn.Dropout)
AvgPool2d = wrap_layer(_torch_nn.AvgPool2d)
MaxPool2d = wrap_layer(_torch_nn.MaxPool2d)
Embedding = wrap_layer(_torch_nn.Embedding)
MultiheadAttention = wrap_layer(_torch_nn.MultiheadAttention)


Module = _torch_nn.Module  # so that ``class Net(nn.Module)`` reads as in plain PyTorch
Sequential = _torch_nn.Sequential
ModuleList = _torch_nn.ModuleList
ModuleDict = _torch_nn.ModuleDict


def __getattr__(name: str):
    """Any other torch.nn layer, wrapped on first use (``retiarii_ir.nn.Hardswish``); other
    torch.nn names (``functional``, ``Parameter``, ``init``) as they are."""
    try:
        value = getattr(_torch_nn, name)
    except AttributeError:
        raise AttributeError(f"module 'retiarii_ir.nn' has no attribute {name!r}") from None
    if isinstance(value, type) and issubclass(value, _torch_nn.Module) and not name.startswith("_"):
        return wrap_layer(value)
    return value


__all__ = [
    "AvgPool2d", "BatchNorm1d", "BatchNorm2d", "Cell", "ChosenInputs", "Conv1d", "Conv2d", "Conv3d",
    "Dropout", "Embedding", "GroupNorm", "InputChoice", "LayerChoice", "LayerNorm", "Linear",
    "LooseEndMerge", "MaxPool2d", "Module", "ModuleDict", "ModuleList", "MultiheadAttention", "Repeat", "Sequential", "ValueChoice", "ValueChoiceLayer",
    "ValueExpr", "model_wrapper", "wrap_layer",
]
