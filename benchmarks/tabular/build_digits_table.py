"""Build the digits cell table: train every architecture of a small cell space once.

Every architecture of the space below is trained with one fixed recipe on scikit-learn's
digits (8x8 images, fixed stratified train/validation split, fixed seed) and its
validation accuracy is recorded, so strategies can be compared on real numbers at no cost.

    python benchmarks/tabular/build_digits_table.py            # writes digits_cell.json
    python benchmarks/tabular/build_digits_table.py --limit 5  # time a few architectures
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from retiarii_ir.space.search_space import Choice, SearchSpace

TABLE_PATH = Path(__file__).with_name("digits_cell.json")
NODES = 3
RECIPE = {"epochs": 2, "batch_size": 64, "optimizer": "Adam", "lr": 0.005, "seed": 0,
          "validation_fraction": 0.2, "split_seed": 0, "stem": "conv3x3", "head": "flatten+linear"}


def digits_cell_space() -> SearchSpace:
    """Width, then per node: its input (any earlier node) and its op, with nested op options."""
    choices = [Choice("width", (8, 16))]
    for i in range(1, NODES + 1):
        if i > 1:
            choices.append(Choice(f"node{i}_input", tuple(range(i)), kind="input"))
        choices.append(Choice(f"node{i}_op", ("conv", "pool", "skip"), kind="layer"))
        choices.append(Choice(f"node{i}_kernel", (1, 3), parent=(f"node{i}_op", "conv"), kind="value"))
        choices.append(Choice(f"node{i}_pool", ("max", "avg"), parent=(f"node{i}_op", "pool"), kind="value"))
    return SearchSpace.of(choices)


def make_op(sample: dict, i: int, width: int) -> nn.Module:
    """The op of node ``i``: conv (1x1 or 3x3) + BatchNorm + ReLU, 3x3 max/avg pooling, or identity."""
    op = sample[f"node{i}_op"]
    if op == "conv":
        k = sample[f"node{i}_kernel"]
        return nn.Sequential(nn.Conv2d(width, width, k, padding=k // 2, bias=False), nn.BatchNorm2d(width), nn.ReLU())
    if op == "pool":
        cls = nn.MaxPool2d if sample[f"node{i}_pool"] == "max" else nn.AvgPool2d
        return cls(3, stride=1, padding=1)
    return nn.Identity()


class CellNet(nn.Module):
    """Stem conv, one searched cell (loose ends summed), flatten + linear classifier."""

    def __init__(self, sample: dict):
        super().__init__()
        width = sample["width"]
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU())
        self.inputs = [0] + [sample[f"node{i}_input"] for i in range(2, NODES + 1)]
        self.ops = nn.ModuleList(make_op(sample, i, width) for i in range(1, NODES + 1))
        used = set(self.inputs)
        self.loose_ends = [i for i in range(1, NODES + 1) if i not in used]
        self.head = nn.Linear(width * 64, 10)

    def forward(self, x):
        states = [self.stem(x)]
        for source, op in zip(self.inputs, self.ops):
            states.append(op(states[source]))
        out = sum(states[i] for i in self.loose_ends)
        return self.head(torch.relu(out).flatten(1))


def load_split():
    """Digits as float tensors in [0, 1], with the fixed stratified split of the recipe."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_va, y_tr, y_va = train_test_split(x, y, test_size=RECIPE["validation_fraction"],
                                              random_state=RECIPE["split_seed"], stratify=y)
    to_x = lambda a: torch.tensor(a, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    return to_x(x_tr), torch.tensor(y_tr), to_x(x_va), torch.tensor(y_va)


def train_and_evaluate(sample: dict, data) -> float:
    """Validation accuracy of ``sample`` after the fixed recipe."""
    x_tr, y_tr, x_va, y_va = data
    torch.manual_seed(RECIPE["seed"])
    model = CellNet(sample)
    opt = torch.optim.Adam(model.parameters(), lr=RECIPE["lr"])
    gen = torch.Generator().manual_seed(RECIPE["seed"])
    for _ in range(RECIPE["epochs"]):
        order = torch.randperm(len(x_tr), generator=gen)
        for start in range(0, len(order), RECIPE["batch_size"]):
            idx = order[start:start + RECIPE["batch_size"]]
            loss = nn.functional.cross_entropy(model(x_tr[idx]), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return (model(x_va).argmax(1) == y_va).float().mean().item()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="train only the first N architectures")
    parser.add_argument("--out", type=Path, default=TABLE_PATH)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    space, data = digits_cell_space(), load_split()
    rows, start = [], time.time()
    for n, sample in enumerate(space.grid()):
        if args.limit is not None and n >= args.limit:
            break
        accuracy = train_and_evaluate(sample, data)
        rows.append({"sample": sample, "accuracy": round(accuracy, 6)})
        if n % 50 == 0:
            print(f"{n + 1}/{space.size} architectures, {time.time() - start:.0f}s, last accuracy {accuracy:.4f}",
                  flush=True)
    table = {"name": "digits-cell", "recipe": RECIPE, "space": space.to_json(), "rows": rows,
             "build_seconds": round(time.time() - start, 1), "torch": torch.__version__}
    if args.limit is None:
        args.out.write_text(json.dumps(table, separators=(",", ":")) + "\n")
        print(f"wrote {len(rows)} architectures to {args.out} in {table['build_seconds']}s")
    else:
        print(f"{len(rows)} architectures in {table['build_seconds']}s (not written)")


if __name__ == "__main__":
    main()
