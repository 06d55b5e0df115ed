"""Reference model spaces written with ``retiarii_ir.nn``: a DARTS-style cell network, a
MobileNetV3-style network and NAS-Bench-201's cell. Each is a plain ``nn.Module`` class to pass
to ``retiarii_ir.trace_space`` with an example input (8x8 images for the first and last, 16x16
for MobileNetV3), and a starting point to copy for a space of one's own."""

from .darts import DartsSpace
from .mobilenetv3 import MobileNetV3Space
from .nasbench201 import NasBench201

__all__ = ["DartsSpace", "MobileNetV3Space", "NasBench201"]
