"""FluidML passes for TVM Relax pipelines."""

from ..analysis.phase import PipelinePlacementError
from .fluidml_plan import FluidMLPlan
from .plan_memory import PlanMemory
from .lift_kernel_scratch import LiftKernelScratch
from .reorder_for_memory import ReorderForMemory
from .write_into_output import WriteIntoOutput

__all__ = ["FluidMLPlan", "LiftKernelScratch", "PlanMemory", "ReorderForMemory", "WriteIntoOutput",
           "PipelinePlacementError"]
