"""Layer helpers; ``stochastic_depth`` shadows its own submodule, as in public vision libraries."""

from .stochastic_depth import StochasticDepth, stochastic_depth

__all__ = ["StochasticDepth", "stochastic_depth"]
