"""One optimizer step for every trial of a merged group.

A trial's trainable tensors are whole parameters of the merged module, or its rows of a
parameter that operator batching stacked for K trials (``optimizer.TrialTensor``).

- A tensor whose trials share one recipe (optimizer, hyperparameters, schedule) steps in that
  recipe's ``torch.optim`` optimizer, one set of foreach kernels for all such tensors. The
  updates are elementwise, so every row gets exactly the arithmetic torch.optim gives it
  when its trial trains alone.
- A stacked tensor whose trials' hyperparameters differ steps with them as per-row tensors
  (``_RowwiseSGD``, ``_RowwiseAdam``): one kernel per update for all K trials, repeating
  torch.optim's arithmetic operation by operation, so each row still ends bit for bit where
  torch.optim puts its trial's tensor (tests pin this).

Each trial's optimizer state can be taken out in torch.optim's own per-tensor form and put
back into another layout, so a group planned again keeps every trial's momentum.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from retiarii_ir.errors import IRError
from retiarii_ir.optimizer import TrialTensor


def scheduled_lr(config, step: int, total_steps: int) -> float:
    """The learning rate of step ``step`` (0-based) of ``total_steps``: constant, or cosine
    annealing from ``lr`` towards 0 (torch's ``CosineAnnealingLR`` with ``T_max=total_steps``)."""
    if config.schedule == "cosine" and total_steps > 0:
        return config.lr * (1 + math.cos(math.pi * step / total_steps)) / 2
    return config.lr


def make_optimizer(config, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """The trial's ``torch.optim`` optimizer; foreach: one kernel per update for all its tensors."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                               foreach=True)
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay, foreach=True)


def recipe_of(config) -> tuple:
    """What must be equal for two trials to share a torch.optim optimizer."""
    return config.optimizer, config.lr, config.momentum, config.weight_decay, tuple(config.betas), config.schedule


class GroupOptimizer:
    """The optimizer steps of a group's trials (see the module docstring)."""

    def __init__(self, configs: list, tensors: list[list[TrialTensor]], total_steps: int = 0) -> None:
        self.configs, self.tensors, self.total_steps = configs, tensors, total_steps
        owners: dict[int, list[tuple[int, TrialTensor]]] = {}
        params: dict[int, nn.Parameter] = {}
        for k, pieces in enumerate(tensors):
            for piece in pieces:
                owners.setdefault(id(piece.param), []).append((k, piece))
                params[id(piece.param)] = piece.param
        by_recipe: dict[tuple, list[nn.Parameter]] = {}
        rowwise: dict[str, list[tuple[nn.Parameter, list]]] = {}
        self._recipe_trial: dict[tuple, int] = {}
        for pid, members in owners.items():
            recipes = {recipe_of(configs[k]) for k, _ in members}
            if len(recipes) == 1:
                recipe = recipes.pop()
                by_recipe.setdefault(recipe, []).append(params[pid])
                self._recipe_trial.setdefault(recipe, members[0][0])
            else:
                kinds = {configs[k].optimizer for k, _ in members}
                if len(kinds) != 1:
                    raise ValueError(f"one stacked tensor cannot step with optimizers {sorted(kinds)}")
                rowwise.setdefault(kinds.pop(), []).append((params[pid], [(k, t.rows) for k, t in members]))
        self.optimizers = {recipe: make_optimizer(configs[self._recipe_trial[recipe]], ps)
                           for recipe, ps in by_recipe.items()}
        self.rowwise = [(_RowwiseSGD if kind == "sgd" else _RowwiseAdam)(configs, members, kind == "adamw")
                        for kind, members in rowwise.items()]
        self._owner_of = {id(p): optimizer for optimizer in self.optimizers.values()
                          for group in optimizer.param_groups for p in group["params"]}
        for rows in self.rowwise:
            self._owner_of.update(dict.fromkeys((id(p) for p, _ in rows.members), rows))

    def zero_grad(self) -> None:
        for pieces in self.tensors:
            for piece in pieces:
                piece.param.grad = None

    def step(self, step: int = 0) -> None:
        """Step ``step`` of training: each recipe's scheduled learning rate, then the updates.
        Tensors without a gradient (a trial that left this step) are skipped, as torch.optim does."""
        for recipe, optimizer in self.optimizers.items():
            lr = scheduled_lr(self.configs[self._recipe_trial[recipe]], step, self.total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.step()
        lrs = [scheduled_lr(c, step, self.total_steps) for c in self.configs]
        for rows in self.rowwise:
            rows.step(lrs)

    def clip_grad_norm(self, k: int, max_norm: float) -> None:
        """``nn.utils.clip_grad_norm_`` over trial k's gradients alone (its rows of stacked ones)."""
        grads = [piece.of(piece.param.grad) for piece in self.tensors[k] if piece.param.grad is not None]
        if not grads:
            return
        total = torch.nn.utils.get_total_norm(grads, 2.0)
        torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))

    def drop_gradients(self, k: int) -> None:
        """Trial k leaves this step: its whole tensors keep no gradient (so they do not move);
        its rows of stacked tensors get zeros (it is planned out before its rows are read again)."""
        for piece in self.tensors[k]:
            if piece.rows is None:
                piece.param.grad = None
            elif piece.param.grad is not None:
                piece.of(piece.param.grad).zero_()

    def state_of(self, k: int) -> dict[str, dict]:
        """Trial k's optimizer state per state_dict key, in torch.optim's per-tensor form."""
        out = {}
        for piece in self.tensors[k]:
            owner = self._owner_of[id(piece.param)]
            if isinstance(owner, _Rowwise):
                out[piece.key] = owner.state_of(piece.param, k, piece.rows)
            else:
                state = owner.state.get(piece.param, {})
                out[piece.key] = {name: (piece.of(v).clone() if _is_per_element(v, piece.param) else _copy(v))
                                  for name, v in state.items()}
        return out

    def load_state(self, k: int, states: dict[str, dict]) -> None:
        """Put back what ``state_of`` took, onto trial k's tensors in this group's layout."""
        missing = {piece.key for piece in self.tensors[k]} - set(states)
        if missing:
            raise IRError(f"trial {k}'s saved optimizer state lacks {sorted(missing)[:5]}")
        for piece in self.tensors[k]:
            entry = states[piece.key]
            if not entry:
                continue
            owner = self._owner_of[id(piece.param)]
            if isinstance(owner, _Rowwise):
                owner.load(piece.param, k, piece.rows, entry)
                continue
            if piece.rows is None:
                owner.state[piece.param] = {name: _copy(value) for name, value in entry.items()}
                continue
            state = owner.state.setdefault(piece.param, {})
            for name, value in entry.items():
                if isinstance(value, torch.Tensor) and value.shape == piece.of(piece.param).shape and value.dim():
                    if name not in state:
                        state[name] = torch.zeros_like(piece.param)
                    piece.of(state[name]).copy_(value)
                else:
                    state[name] = _copy(value)


def _copy(value):
    """A tensor of optimizer state is updated in place (Adam's step count): never share one."""
    return value.clone() if isinstance(value, torch.Tensor) else value


def _is_per_element(value, param: torch.Tensor) -> bool:
    return isinstance(value, torch.Tensor) and value.shape == param.shape and value.dim() > 0


class _Rowwise:
    """Stacked tensors whose rows belong to trials with different hyperparameters."""

    def __init__(self, configs: list, members: list[tuple[nn.Parameter, list]], decoupled: bool) -> None:
        self.configs, self.members, self.decoupled = configs, members, decoupled
        self.state: dict[int, dict] = {}
        self._columns: dict[tuple, torch.Tensor] = {}
        self._row_trial = {}  # per tensor: the trial of each row, to spread per-trial values over rows
        for param, owners in members:
            trial = torch.empty(param.shape[0], dtype=torch.long)
            for k, (start, end) in owners:
                trial[start:end] = k
            self._row_trial[id(param)] = trial, [k for k, _ in owners]

    def per_row(self, param: torch.Tensor, value_of) -> float | torch.Tensor:
        """``value_of(k)`` for each trial k with rows in ``param``, as a number where those trials
        agree, else as a column of per-row values that broadcasts over the tensor. (Other trials
        of the group are not asked: their step counts may still be 0.)"""
        trials, members = self._row_trial[id(param)]
        values = [0.0] * len(self.configs)
        for k in members:
            values[k] = value_of(k)
        used = {values[k] for k in members}
        if len(used) == 1:
            return used.pop()
        key = (id(param), tuple(values[k] for k in members))
        if key not in self._columns:  # built once per distinct set of values: no host-to-device copy per step
            column = torch.tensor(values, dtype=param.dtype)[trials].to(param.device)
            if len(self._columns) > 4 * len(self.members) + 64:  # a schedule changes lr at every step
                self._columns.clear()
            self._columns[key] = column.view(-1, *([1] * (param.dim() - 1)))
        return self._columns[key]

    def state_of(self, param, k: int, rows) -> dict:
        raise NotImplementedError

    def load(self, param, k: int, rows, entry: dict) -> None:
        raise NotImplementedError


class _RowwiseSGD(_Rowwise):
    """torch.optim.SGD (momentum, weight decay; no dampening or Nesterov) with per-row values."""

    def step(self, lrs: list[float]) -> None:
        for param, _ in self.members:
            grad = param.grad
            if grad is None:
                continue
            with torch.no_grad():
                decay = self.per_row(param, lambda k: self.configs[k].weight_decay)
                if isinstance(decay, torch.Tensor):
                    grad = grad.addcmul(param, decay)
                elif decay != 0:
                    grad = grad.add(param, alpha=decay)
                momentum = self.per_row(param, lambda k: self.configs[k].momentum)
                if isinstance(momentum, torch.Tensor) or momentum != 0:
                    state = self.state.setdefault(id(param), {})
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = grad.detach().clone()
                    else:
                        state["momentum_buffer"].mul_(momentum).add_(grad)
                    grad = state["momentum_buffer"]
                lr = self.per_row(param, lambda k: lrs[k])
                if isinstance(lr, torch.Tensor):
                    param.addcmul_(grad, -lr)
                else:
                    param.add_(grad, alpha=-lr)

    def state_of(self, param, k: int, rows) -> dict:
        state = self.state.get(id(param), {})
        if self.configs[k].momentum == 0 or "momentum_buffer" not in state:
            return {}
        return {"momentum_buffer": state["momentum_buffer"][rows[0]:rows[1]].clone()}

    def load(self, param, k: int, rows, entry: dict) -> None:
        if entry.get("momentum_buffer") is None:
            return
        state = self.state.setdefault(id(param), {})
        state.setdefault("momentum_buffer", torch.zeros_like(param))[rows[0]:rows[1]].copy_(entry["momentum_buffer"])


class _RowwiseAdam(_Rowwise):
    """torch.optim.Adam / AdamW (no amsgrad) with per-row values, following its foreach
    arithmetic step by step."""

    def step(self, lrs: list[float]) -> None:
        for param, owners in self.members:
            grad = param.grad
            if grad is None:
                continue
            state = self.state.setdefault(id(param), {})
            if "exp_avg" not in state:
                state.update(exp_avg=torch.zeros_like(param), exp_avg_sq=torch.zeros_like(param),
                             steps=[0.0] * len(self.configs))
            steps = state["steps"]
            for k, _ in owners:
                steps[k] += 1
            with torch.no_grad():
                self._update(param, grad, state, lrs, steps)

    def _update(self, param, grad, state, lrs, steps) -> None:
        configs = self.configs

        def row(value_of):
            return self.per_row(param, value_of)

        if self.decoupled:
            factor = row(lambda k: 1 - lrs[k] * configs[k].weight_decay)
            if isinstance(factor, torch.Tensor) or factor != 1:
                param.mul_(factor)
        else:
            wd = row(lambda k: configs[k].weight_decay)
            if isinstance(wd, torch.Tensor):
                grad = grad.addcmul(param, wd)
            elif wd != 0:
                grad = grad.add(param, alpha=wd)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, row(lambda k: 1 - configs[k].betas[0]))
        exp_avg_sq.mul_(row(lambda k: configs[k].betas[1]))
        rest = row(lambda k: 1 - configs[k].betas[1])
        if isinstance(rest, torch.Tensor):
            exp_avg_sq.addcmul_(grad * rest, grad)
        else:
            exp_avg_sq.addcmul_(grad, grad, value=rest)
        step_size = row(lambda k: (lrs[k] / (1 - configs[k].betas[0] ** steps[k])) * -1)
        denom = exp_avg_sq.sqrt()
        denom.div_(row(lambda k: (1 - configs[k].betas[1] ** steps[k]) ** 0.5))
        denom.add_(1e-8)
        if isinstance(step_size, torch.Tensor):
            param.addcdiv_(exp_avg * step_size, denom)
        else:
            param.addcdiv_(exp_avg, denom, value=step_size)

    def state_of(self, param, k: int, rows) -> dict:
        state = self.state.get(id(param))
        if not state:
            return {}
        return {"step": torch.tensor(state["steps"][k]), "exp_avg": state["exp_avg"][rows[0]:rows[1]].clone(),
                "exp_avg_sq": state["exp_avg_sq"][rows[0]:rows[1]].clone()}

    def load(self, param, k: int, rows, entry: dict) -> None:
        state = self.state.setdefault(id(param), {})
        if "exp_avg" not in state:
            state.update(exp_avg=torch.zeros_like(param), exp_avg_sq=torch.zeros_like(param),
                         steps=[0.0] * len(self.configs))
        state["exp_avg"][rows[0]:rows[1]].copy_(entry["exp_avg"])
        state["exp_avg_sq"][rows[0]:rows[1]].copy_(entry["exp_avg_sq"])
        state["steps"][k] = float(entry["step"])
