"""A small third-party-style model package, for tests of tracing code the project did not write.

Like a vision library's ``ops`` package, ``userpkg.ops`` re-exports a function under the
name of the submodule that defines it, so ``userpkg.ops.stochastic_depth`` is both.
"""
