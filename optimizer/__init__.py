"""Cross-model optimizer: K trials as one merged graph that trains them all at once.

``plan(trials, passes=("dedup", "cse", "batch"))`` puts the trials' graphs side by side and
applies, each switchable on its own: input dedup (trials reading the same batches share one
input), common-subgraph elimination (computations equal across trials run once) and
operator batching (same-shaped layers of different trials run as one kernel). The plan maps
every trial back to its output and its own state_dict entries.
"""

from .batching import BatchedGroup
from .cse import SharedNode
from .matching import ConvFusion, FuseDecision
from .merge import initial_state
from .modes import eval_layers
from .plan import EXACT_PASSES, PASSES, Plan, PlanError, TrialSlot, TrialTensor, plan
from .roles import BATCHED, GLUE, OWN, SHARED, NodeRole, node_roles
from .state import StateError, StateRef
from .report import MergedNode, TrialView, merged_nodes
from .trial import DataSpec, TrainConfig, Trial, TrialSpecError

__all__ = ["BATCHED", "EXACT_PASSES", "GLUE", "OWN", "PASSES", "SHARED", "BatchedGroup", "ConvFusion", "DataSpec",
           "FuseDecision", "MergedNode", "NodeRole", "Plan", "PlanError", "SharedNode", "StateError", "StateRef", "TrainConfig", "Trial",
           "TrialSlot", "TrialSpecError", "TrialTensor", "TrialView", "eval_layers", "initial_state", "merged_nodes", "node_roles", "plan"]
