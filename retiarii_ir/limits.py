"""Limits on what a graph may ask for, so malformed or hostile input fails cleanly.

Read at call time: set ``retiarii_ir.limits.MAX_BUILD_BYTES = ...`` to change a default
for the whole process, or pass ``max_bytes=`` to ``build_module`` for one call.
"""

MAX_BUILD_BYTES = 8 * 2**30
"""Parameters, buffers, constants and example inputs that building or typing one graph
may allocate."""

MAX_JSON_DEPTH = 64
"""Nesting of arrays and objects in graph JSON (real graphs need fewer than ten levels)."""

MAX_MODULE_LAYERS = 1024
"""``num_layers`` a module spec may ask for (building one layer per step takes time even on
the meta device)."""
