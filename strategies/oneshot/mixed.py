"""Mixed modules: what each ``retiarii_ir.nn`` choice becomes inside a supernet.

Every mixed module reads one shared ``ArchState``. In *sample* mode it runs exactly the
architecture of a sample, as ``space.freeze`` would build it (value layers slice the
largest weights). In *gated* mode each label has a gate vector and the module returns
the gate-weighted sum over the label's candidates it is told to run: DARTS sets the gates
to softmax weights, ProxylessNAS to a binary one-hot whose gradient scores the paths.
Gated value layers run at their largest shape with masked weights, so shapes agree.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from retiarii_ir.errors import IRError
from retiarii_ir.space import chosen_indices, evaluate, leaves_of, nn as space_nn, reduce_inputs, searched_arguments


class OneShotError(IRError):
    """A one-shot search was misused (bad option, export before fit, wrong checkpoint)."""


class OneShotWarning(UserWarning):
    """A one-shot method will search this space less well than it could (and says how to fix it)."""


class UnsupportedSpaceError(OneShotError):
    """A one-shot method cannot handle a choice of this space; names the label."""


@dataclass
class Gate:
    """One label's gate: a weight per candidate, and the candidate indices to run."""

    weights: torch.Tensor
    active: list[int]


class ArchState:
    """The architecture the mixed modules of one supernet run: a sample, or gates per label."""

    def __init__(self, values: Mapping[str, list[Any]]) -> None:
        self.values = {label: list(v) for label, v in values.items()}
        self.sample: dict[str, Any] | None = None
        self.gates: dict[str, Gate] = {}
        self.method = "this method"

    def index(self, label: str, value: Any) -> int:
        for i, candidate in enumerate(self.values[label]):
            if _same(candidate, value):
                return i
        raise UnsupportedSpaceError(f"value {value!r} is not a candidate of label {label!r}: {self.values[label]}")

    def value(self, label: str, where: str) -> Any:
        """The sample's value of ``label``; an error naming the site when it is missing."""
        if label not in self.sample:
            raise UnsupportedSpaceError(f"{where} needs label {label!r}, which the sample does not hold "
                                        f"(an inactive choice was run)")
        return self.sample[label]

    def gate(self, label: str) -> Gate:
        if label not in self.gates:
            raise UnsupportedSpaceError(f"{self.method} set no gate for label {label!r}")
        return self.gates[label]


def _same(a: Any, b: Any) -> bool:
    norm = lambda v: list(map(norm, v)) if isinstance(v, (list, tuple)) else v  # noqa: E731
    return norm(a) == norm(b)


def weighted_sum(state: ArchState, label: str, outputs: list[tuple[int, torch.Tensor]]) -> torch.Tensor:
    """Sum of gate weight x output; the candidates must agree in shape to be mixed."""
    gate = state.gate(label)
    shapes = {tuple(out.shape) for _, out in outputs}
    if len(shapes) > 1:
        raise UnsupportedSpaceError(f"{state.method} cannot mix the candidates of label {label!r}: their outputs "
                                    f"have different shapes {sorted(shapes)}")
    total = None
    for i, out in outputs:
        term = gate.weights[i] * out
        total = term if total is None else total + term
    return total


# ---------------------------------------------------------------------- conversions
# Each mixed module says which choice it stands for and how it is made from one (as NNI 3.0's
# ``mutate`` class methods do); the supernet walks the model and asks them in this order.
MIXED_MODULES: list[type[nn.Module]] = []


def mixes(choice_type: type):
    """Class decorator: the mixed module stands for modules of ``choice_type``."""
    def register(cls: type[nn.Module]) -> type[nn.Module]:
        cls.choice_type = choice_type
        MIXED_MODULES.append(cls)
        return cls
    return register


def mixed_for(module: nn.Module, parent: nn.Module, state: "ArchState", path: str) -> nn.Module | None:
    """The mixed module that stands for ``module`` (a child of ``parent`` at ``path``), or None."""
    for cls in MIXED_MODULES:
        if isinstance(module, cls.choice_type):
            return cls.convert(module, parent, state, path)
    return None


@mixes(space_nn.LayerChoice)
class MixedLayerChoice(nn.Module):
    """A LayerChoice: the chosen candidate, or the gated sum of the candidates to run."""

    @classmethod
    def convert(cls, choice: nn.Module, parent: nn.Module, state: "ArchState", path: str) -> nn.Module:
        return cls(choice, state)

    def __init__(self, choice: nn.Module, state: ArchState) -> None:
        super().__init__()
        self.label, self.values, self.nested = choice.label, list(choice.values), choice.parent is not None
        self._state = [state]  # in a list, so that it is not a submodule
        for key, module in choice.named_children():
            self.add_module(key, module)

    def candidate(self, value: Any) -> nn.Module:
        return self._modules[str(value)]

    def forward(self, *args: Any) -> Any:
        state = self._state[0]
        if state.sample is not None:
            if self.label not in state.sample and self.nested:
                return None  # an edge of a cell whose input was not chosen: nobody reads it
            return self.candidate(state.value(self.label, f"LayerChoice {self.label!r}"))(*args)
        gate = state.gate(self.label)
        return weighted_sum(state, self.label, [(i, self.candidate(self.values[i])(*args)) for i in gate.active])


@mixes(space_nn.InputChoice)
class MixedInputChoice(nn.Module):
    """An InputChoice: the chosen inputs reduced, or the gated sum over candidate selections."""

    @classmethod
    def convert(cls, choice: nn.Module, parent: nn.Module, state: "ArchState", path: str) -> nn.Module:
        return cls(choice, state)

    def __init__(self, choice: nn.Module, state: ArchState) -> None:
        super().__init__()
        self.label, self.values, self.reduction = choice.label, list(choice.values), choice.reduction
        self._state = [state]

    def forward(self, inputs: list[Any]) -> Any:
        state = self._state[0]
        if state.sample is not None:
            return reduce_inputs([inputs[i] for i in chosen_indices(state.value(self.label, "InputChoice"))],
                                 self.reduction)
        if self.reduction == "none":
            raise UnsupportedSpaceError(f"{state.method} cannot mix InputChoice {self.label!r}: reduction 'none' "
                                        f"returns a list")
        gate = state.gate(self.label)
        outputs = [(i, reduce_inputs([inputs[k] for k in chosen_indices(self.values[i])], self.reduction))
                   for i in gate.active]
        return weighted_sum(state, self.label, outputs)


@mixes(space_nn.Repeat)
class MixedRepeat(nn.Module):
    """A Repeat: the first ``depth`` blocks, or the gated sum of the outputs at each depth."""

    @classmethod
    def convert(cls, repeat: nn.Module, parent: nn.Module, state: "ArchState", path: str) -> nn.Module:
        return cls(repeat, state)

    def __init__(self, repeat: nn.Module, state: ArchState) -> None:
        super().__init__()
        self.label, self.depths = repeat.label, list(repeat.depths)
        self._state = [state]
        for key, module in repeat.named_children():
            self.add_module(key, module)

    def block(self, index: int) -> nn.Module:
        return self._modules[str(index)]

    def forward(self, x: Any) -> Any:
        state = self._state[0]
        if state.sample is not None:
            for i in range(state.value(self.label, f"Repeat {self.label!r}")):
                x = self.block(i)(x)
            return x
        gate = state.gate(self.label)
        wanted = {self.depths[i]: i for i in gate.active}
        outputs = [(wanted[0], x)] if 0 in wanted else []
        for depth in range(1, max(wanted) + 1):
            x = self.block(depth - 1)(x)
            if depth in wanted:
                outputs.append((wanted[depth], x))
        return weighted_sum(state, self.label, outputs)


@mixes(space_nn.LooseEndMerge)
class MixedLooseEnd(nn.Module):
    """A cell's loose-end merge: concatenates the nodes no chosen input reads (sample mode only)."""

    @classmethod
    def convert(cls, merge: nn.Module, parent: nn.Module, state: "ArchState", path: str) -> nn.Module:
        if not isinstance(parent, space_nn.Cell):
            raise UnsupportedSpaceError(f"loose-end merge {path!r} ({merge.label!r}) is not inside a Cell")
        return cls(merge, parent, state)

    def __init__(self, merge: nn.Module, cell: nn.Module, state: ArchState) -> None:
        super().__init__()
        self.label, self.concat_dim = merge.label, merge.concat_dim
        self.num_nodes, self.num_ops = cell.num_nodes, cell.num_ops_per_node
        self.num_predecessors = cell.num_predecessors
        self._state = [state]

    def forward(self, nodes: list[torch.Tensor]) -> torch.Tensor:
        state = self._state[0]
        if state.sample is None:
            raise UnsupportedSpaceError(f"{state.method} cannot relax the loose-end merge of cell {self.label!r} "
                                        f"(its width depends on the chosen inputs); use merge_op='all'")
        read = set()
        for i in range(self.num_nodes):
            for j in range(self.num_ops):
                read.update(chosen_indices(state.value(f"{self.label}/input_{i}_{j}", "loose-end merge")))
        loose = [nodes[i] for i in range(self.num_nodes) if i + self.num_predecessors not in read]
        return torch.cat(loose, dim=self.concat_dim)


# ---------------------------------------------------------------------- value layers
_SHAPE_ARGS = frozenset({"in_channels", "out_channels", "in_features", "out_features", "num_features", "groups",
                         "kernel_size", "padding", "num_channels", "num_groups", "embedding_dim"})


def _slice(tensor: torch.Tensor, shape: torch.Size, centred_from: int) -> torch.Tensor:
    """The leading part of each dimension; dimensions from ``centred_from`` on (kernels) centred."""
    index = []
    for d, (have, want) in enumerate(zip(tensor.shape, shape)):
        start = (have - want) // 2 if d >= centred_from else 0
        index.append(slice(start, start + want))
    return tensor[tuple(index)]


@mixes(space_nn.ValueChoiceLayer)
class MixedValueLayer(nn.Module):
    """A torch layer built with ValueChoice arguments, holding the weights of its largest form.

    Each combination of its labels' values is a shell module on the meta device; the
    forward calls the shell with the largest weights sliced to the shell's shapes
    (channels from the start, kernels from the centre).
    """

    @classmethod
    def convert(cls, layer: nn.Module, parent: nn.Module, state: "ArchState", path: str) -> nn.Module | None:
        return cls(layer, state, path) if searched_arguments(layer) else None  # no choice inside: left as it is

    def __init__(self, layer: nn.Module, state: ArchState, where: str) -> None:
        super().__init__()
        self.where, self.base_class = where, layer.base_class
        self.value_args = searched_arguments(layer)
        self.args, self.kwargs = _args_with_choices(layer)
        self.labels = {leaf.label: list(leaf.candidates) for leaf in leaves_of(list(self.value_args.values()))}
        self._state = [state]
        self._shells: dict[tuple, nn.Module] = {}
        self._masks: dict[tuple, torch.Tensor] = {}
        self.momentum_override: Any = "unset"
        combos = list(itertools.product(*self.labels.values()))
        shapes = {combo: self._shapes(self._shell(combo)) for combo in combos}
        names = list(shapes[combos[0]])
        largest = {n: tuple(max(s[n][d] for s in shapes.values()) for d in range(len(shapes[combos[0]][n])))
                   for n in names}
        biggest = [c for c in combos if shapes[c] == largest]
        if not biggest:
            raise UnsupportedSpaceError(f"layer {where!r} ({self.base_class.__name__}) has no single largest form over "
                                        f"labels {list(self.labels)}, so its weights cannot be shared")
        self.largest_combo = biggest[0]
        module = self.base_class(*self._args(self.largest_combo)[0], **self._args(self.largest_combo)[1])
        self._keep = {n for n, _ in module.named_parameters()} | {n for n, _ in module.named_buffers()}
        for name, child in module.named_children():
            self.add_module(name, child)
        for name, p in module.named_parameters(recurse=False):
            self.register_parameter(name, p)
        for name, b in module.named_buffers(recurse=False):
            self.register_buffer(name, b, persistent=name not in module._non_persistent_buffers_set)
        self.shapes = shapes
        self.centred_from = 2 if isinstance(module, nn.modules.conv._ConvNd) else 99
        self.gate_problem = self._gate_problem(combos)

    # ------------------------------------------------------------------ building
    def _args(self, combo: tuple) -> tuple[list, dict]:
        values = dict(zip(self.labels, combo))
        args = [evaluate(a, values) for a in self.args]
        kwargs = {k: evaluate(v, values) for k, v in self.kwargs.items()}
        return args, kwargs

    def _shell(self, combo: tuple) -> nn.Module:
        if combo not in self._shells:
            args, kwargs = self._args(combo)
            try:
                with torch.device("meta"):
                    self._shells[combo] = self.base_class(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - a combination torch refuses
                raise UnsupportedSpaceError(f"layer {self.where!r}: {dict(zip(self.labels, combo))} gives an invalid "
                                            f"{self.base_class.__name__}: {e}") from None
        return self._shells[combo]

    @staticmethod
    def _shapes(shell: nn.Module) -> dict[str, tuple]:
        return {n: tuple(t.shape) for n, t in itertools.chain(shell.named_parameters(), shell.named_buffers())}

    def _gate_problem(self, combos: list[tuple]) -> str | None:
        """Why this layer cannot run gated (at its largest shape), or None."""
        if not self._keep:
            return None
        for name, expr in self.value_args.items():
            if name not in _SHAPE_ARGS:
                labels = [leaf.label for leaf in leaves_of(expr)]
                return f"labels {labels} choose argument {name!r} of layer {self.where!r}, which masking cannot mix"
        for combo in combos:
            shell = self._shell(combo)
            if isinstance(shell, nn.modules.conv._ConvNd):
                for k, p, d in zip(shell.kernel_size, shell.padding, shell.dilation):
                    if 2 * p != d * (k - 1):
                        return (f"layer {self.where!r} pads kernel {shell.kernel_size} by {shell.padding} for "
                                f"{dict(zip(self.labels, combo))}: only 'same' padding can be mixed")
        return None

    def combo_of(self, sample: Mapping[str, Any]) -> tuple:
        """The values of this layer's labels in ``sample``, in the order of ``self.labels``."""
        missing = [label for label in self.labels if label not in sample]
        if missing:
            raise UnsupportedSpaceError(f"layer {self.where!r} needs labels {missing}, which the sample does not hold")
        state = self._state[0]
        return tuple(state.values[label][state.index(label, sample[label])] for label in self.labels)

    def sliced_state(self, combo: tuple) -> dict[str, torch.Tensor]:
        """Every parameter and buffer cut to the shapes of ``combo`` (views of the largest)."""
        shapes = self.shapes[combo]
        own = dict(itertools.chain(self.named_parameters(), self.named_buffers()))
        return {n: _slice(own[n], torch.Size(shapes[n]), self.centred_from if n.endswith("weight") else 99)
                for n in self._keep}

    def _call(self, shell: nn.Module, tensors: dict[str, torch.Tensor], args: tuple) -> Any:
        shell.train(self.training)
        if self.momentum_override != "unset" and hasattr(shell, "momentum"):
            shell.momentum = self.momentum_override
        return functional_call(shell, tensors, args, tie_weights=False)

    # ------------------------------------------------------------------ running
    def forward(self, *args: Any) -> Any:
        state = self._state[0]
        if state.sample is not None:
            combo = self.combo_of(state.sample)
            return self._call(self._shell(combo), self.sliced_state(combo), args)
        if self.gate_problem:
            raise UnsupportedSpaceError(f"{state.method} cannot relax this space: {self.gate_problem}")
        gates = [state.gate(label) for label in self.labels]
        combos = list(itertools.product(*[gate.active for gate in gates]))
        if not self._keep:  # no weights: mix the outputs of each combination
            outputs = []
            for idx in combos:
                combo = tuple(self.labels[lbl][i] for lbl, i in zip(self.labels, idx))
                weight = torch.stack([g.weights[i] for g, i in zip(gates, idx)]).prod()
                outputs.append(weight * self._call(self._shell(combo), {}, args))
            return sum(outputs[1:], outputs[0])
        own = dict(itertools.chain(self.named_parameters(), self.named_buffers()))
        tensors = dict(own)
        for name, p in self.named_parameters():
            mask = None
            for idx in combos:
                combo = tuple(self.labels[lbl][i] for lbl, i in zip(self.labels, idx))
                weight = torch.stack([g.weights[i] for g, i in zip(gates, idx)]).prod()
                term = weight * self._mask(name, combo)
                mask = term if mask is None else mask + term
            tensors[name] = p * mask
        return self._call(self._shell(self.largest_combo), tensors, args)

    def _mask(self, name: str, combo: tuple) -> torch.Tensor:
        key = (name, combo)
        if key not in self._masks:
            full = getattr(self, name)
            mask = torch.zeros(full.shape)
            _slice(mask, torch.Size(self.shapes[combo][name]), self.centred_from if name.endswith("weight") else 99
                   ).fill_(1.0)
            self._masks[key] = mask
        return self._masks[key].to(getattr(self, name).device)


def _args_with_choices(layer: nn.Module) -> tuple[list, dict]:
    """The layer's constructor arguments as written, choices included (positional stay positional)."""
    args, kwargs = list(layer.plain_args[0]), dict(layer.plain_args[1])
    names = [n for n in inspect.signature(layer.base_class.__init__).parameters][1:]
    for name, expr in searched_arguments(layer).items():
        if name in kwargs or names.index(name) >= len(args):
            kwargs[name] = expr
        else:
            args[names.index(name)] = expr
    return args, kwargs
