"""Model spaces: ``retiarii_ir.nn`` choices, mutators, samples, and freezing a sample into a Graph.

Built on the IR core (``retiarii_ir``), which never imports this package: a graph, its JSON and
its generated code need nothing from here. ``retiarii_ir.nn`` is this package's ``nn``.
"""

import sys

from . import nn
from .choice_mutators import SiteMutator
from .fixed import fixed_arch
from .model_space import ModelSpace, trace_space
from .mutator import Mutator, ShapeMismatchError
from .nn.choices import chosen_indices, reduce_inputs
from .nn.value_choice import evaluate, leaves_of
from .nn.wrapped import searched_arguments
from .search_space import AnyOf, Choice, InvalidSampleError, Sample, SearchSpace
from .sites import Candidate, ChoiceSite, choice_sites

sys.modules.setdefault("retiarii_ir.nn", nn)  # the public spelling: ``from retiarii_ir import nn``

__all__ = ["AnyOf", "Choice", "InvalidSampleError", "ModelSpace", "Mutator", "Sample", "SearchSpace",
           "ShapeMismatchError", "fixed_arch", "nn", "trace_space",
           # what supernets (one-shot search) build on: the mutator kind that marks a choice site,
           # how an InputChoice's chosen inputs combine, and the values inside searched layers
           "SiteMutator", "chosen_indices", "evaluate", "leaves_of", "reduce_inputs", "searched_arguments",
           # for readers (pictures): each choice site with its candidates and the choices nested in them
           "Candidate", "ChoiceSite", "choice_sites"]
