"""FluidML passes for TVM Relax pipelines."""

from ..analysis.phase import PipelinePlacementError
from .apply_tuning_database import ApplyTuningDatabase
from .check_indices import CheckIndices
from .fluidml_plan import FluidMLPlan
from .plan_memory import PlanMemory
from .expand_integer_power import ExpandIntegerPower
from .fold_layout_kernels import FoldLayoutKernels
from .lift_kernel_scratch import LiftKernelScratch
from .name_fused_calls import NameFusedCalls
from .pack_weights import PackWeights
from .reorder_for_memory import ReorderForMemory
from .schedule_gpu_kernels import ScheduleGPUKernels
from .schedule_kernels import ScheduleKernels
from .write_into_output import WriteIntoOutput

__all__ = ["ApplyTuningDatabase", "CheckIndices", "FluidMLPlan", "LiftKernelScratch", "NameFusedCalls", "PlanMemory", "ReorderForMemory",
           "WriteIntoOutput", "ExpandIntegerPower", "FoldLayoutKernels", "PackWeights", "ScheduleKernels", "ScheduleGPUKernels",
           "PipelinePlacementError"]
