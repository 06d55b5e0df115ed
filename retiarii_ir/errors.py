"""Every error the project raises on purpose, all under IRError. Each names the nodes, modules,
labels or fields involved. (Codegen's, the optimizer's and the runtime's own errors subclass
IRError in their packages.)"""


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its class name when it has none), for
    one-line summaries of what a library below us raised."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


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


class ValueChoiceMisuseError(IRError, TypeError):
    """A ValueChoice reached code that needs a concrete value (a plain torch.nn layer, int(),
    bool(), range(), a comparison). Also a TypeError, which Python expects from such uses."""


class NodeExecutionError(IRError):
    """A node failed while running; names the node and the types it was given."""

    def __init__(self, message: str, node_name: str, reason: str, given: str = "") -> None:
        super().__init__(message)
        self.node_name = node_name
        self.reason = reason
        self.given = given  # the argument types the node was actually called with


class InvalidSampleError(IRError, ValueError):
    """A sample names unknown labels, misses active ones, or holds values outside a choice."""


class StrategyError(IRError, ValueError):
    """A strategy was misused (bad option, unknown sample, observed twice...)."""


class SpaceExhausted(IRError, RuntimeError):
    """Every sample of the space has been proposed once: nothing new is left to try."""
