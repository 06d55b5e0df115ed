"""Reference model spaces written with ``retiarii_ir.nn``: a DARTS-style cell network, a
MobileNetV3-style network, NAS-Bench-201's cell, and the digits spaces the demo searches. Each is a plain ``nn.Module`` class to pass
to ``retiarii_ir.trace_space`` with an example input (8x8 images for the first and last, 16x16
for MobileNetV3), and a starting point to copy for a space of one's own."""

from .darts import DartsSpace
from .digits import DigitsSpace, PretrainedDigitsSpace, digits_features, searched_layers
from .mobilenetv3 import MobileNetV3Space
from .nasbench201 import NasBench201

__all__ = ["DartsSpace", "DigitsSpace", "MobileNetV3Space", "NasBench201", "PretrainedDigitsSpace", "digits_features",
           "searched_layers"]
