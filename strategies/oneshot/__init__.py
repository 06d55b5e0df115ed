"""One-shot architecture search on the same model spaces as multi-trial search.

    space = retiarii_ir.trace_space(model, example)
    search = DARTS(space, model, epochs=10, seed=0, progress=True)
    search.fit(train_x, train_y)
    sample = search.export()           # a plain sample: space.freeze(sample), codegen
    search.alphas()                    # label -> {value: probability}

A supernet (``Supernet``) turns each ``retiarii_ir.nn`` choice of the model into a mixed
module; DARTS, ENAS, SPOS and ProxylessNAS train it and pick one architecture.
"""

from .base import OneShotSearch
from .darts import DARTS
from .enas import ENAS
from .latency import LatencyTable
from .mixed import OneShotError, UnsupportedSpaceError
from .proxyless import ProxylessNAS
from .spos import SPOS
from .supernet import Supernet

__all__ = ["DARTS", "ENAS", "SPOS", "LatencyTable", "OneShotError", "OneShotSearch", "ProxylessNAS", "Supernet",
           "UnsupportedSpaceError"]
