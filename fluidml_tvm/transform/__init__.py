"""FluidML passes for TVM Relax pipelines."""

from ..analysis.phase import PipelinePlacementError
from .fluidml_plan import FluidMLPlan
from .plan_memory import PlanMemory
from .reorder_for_memory import ReorderForMemory

__all__ = ["FluidMLPlan", "PlanMemory", "ReorderForMemory", "PipelinePlacementError"]
