"""Draws the README's three pictures into this folder: python docs/pictures/draw.py"""

import os

import torch

import retiarii_ir as ir
from retiarii_ir.runtime.experiments.pictures import plan_of_samples, show
from retiarii_ir.runtime.models import resnet18
from retiarii_ir.space.hub.digits import DigitsSpace, PretrainedDigitsSpace

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    model = ir.trace(resnet18(num_classes=10, width=8).eval(), torch.randn(2, 3, 32, 32))
    space = ir.trace_space(DigitsSpace(), torch.randn(2, 1, 8, 8))
    pretrained = ir.trace_space(PretrainedDigitsSpace(), torch.randn(2, 1, 8, 8))
    plan = plan_of_samples(pretrained, [{"width": 16, "op": "conv3x3", "depth": 1},
                                        {"width": 16, "op": "maxpool", "depth": 2}])
    for name, thing, depth in (("model", model, 2), ("space", space, None), ("plan", plan, None)):
        for path in show(thing, os.path.join(HERE, f"{name}.png"), depth=depth):
            print(f"wrote {os.path.relpath(path)}")


if __name__ == "__main__":
    main()
