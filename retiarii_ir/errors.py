"""Errors raised by the IR. Each names the nodes, modules or fields involved."""


class IRError(Exception):
    """Base class for every error the IR raises on purpose."""


class TraceError(IRError):
    """A model could not be traced by symbolic tracing nor by torch.export."""


class GraphValidationError(IRError):
    """A graph is structurally broken (dangling input, cycle, duplicate name...)."""


class TypeMismatchError(GraphValidationError):
    """A consumer cannot take the value its producer gives it."""


class SchemaError(IRError):
    """Serialised IR is malformed, of an unknown version, or names something forbidden."""


class UnsafeTargetError(SchemaError):
    """A graph names a callable or module outside the allowed namespaces."""
