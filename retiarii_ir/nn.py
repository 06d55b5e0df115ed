"""``import retiarii_ir.nn as nn``: the model-space layers (``LayerChoice``, ``ValueChoice``...,
and every ``torch.nn`` layer) under the name NNI users know. This module is an alias: it loads the
model-space package and stands for its ``nn``."""

import sys

from .space import nn as _space_nn

sys.modules[__name__] = _space_nn
