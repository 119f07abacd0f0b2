"""FluidMLPlan: the whole-model execution plan as one Relax pass."""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu_pipeline

from ..targets import describe
from ..analysis.phase import is_dataflow_form, require_legalized, require_unplanned
from .lift_kernel_scratch import LiftKernelScratch
from .plan_memory import PLAN_ATTR, PlanMemory
from .reorder_for_memory import ReorderForMemory
from .write_into_output import WriteIntoOutput


@tvm.transform.module_pass(opt_level=0, name="fluidml_tvm.FluidMLPlan")
class FluidMLPlan:
    """Plan execution order and memory of every Relax function.

    Place it after fusion (``FuseOps``/``FuseTIR``) and before TVM's lowering
    (``RewriteDataflowReshape`` ... ``StaticPlanBlockMemory``): there it picks a
    memory-friendly order of each dataflow block, lowers to destination-passing
    form itself, and plans one arena.  Placed after ``CallTIRRewrite`` it plans
    the arena in the existing order.  Anywhere else it raises
    ``PipelinePlacementError`` saying where it belongs.

    Parameters
    ----------
    target : TargetDescription
        Whether storage can be offset (or anything
        :func:`~fluidml_tvm.targets.describe` takes).
    reorder : bool
        Choose the execution order for memory (only possible before lowering).
    planner : str
        A name from ``fluidml_tvm.memory.planners.PLANNERS``; ``"best"`` runs
        every arena heuristic and keeps the smallest.
    inplace : bool
        Let pointwise kernels write their output over an input at its last use.
    scratch : bool
        Hand kernels their fully materialized scratch buffers from the arena
        instead of TVM's per-call workspace pool.
    validate : bool
        Prove each plan with the validator inside the pass.
    solve_seconds : float
        When the heuristics miss the live-set bound, search this long per arena
        for a smaller plan and a proof (``"best"`` only; 0 turns it off).  The
        plan records ``optimal`` or its gap to the proved bound.
    """

    def __init__(self, target, reorder: bool = True, planner: str = "best", inplace: bool = True,
                 scratch: bool = True, validate: bool = False, solve_seconds: float = 2.0):
        self.target = describe(target)
        self.reorder = reorder
        self.scratch = scratch
        self.plan_memory = PlanMemory(target, planner=planner, inplace=inplace, validate=validate,
                                      solve_seconds=solve_seconds)

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        funcs = [(gv, f) for gv, f in mod.functions.items() if isinstance(f, relax.Function)]
        for gv, func in funcs:
            if func.attrs and PLAN_ATTR in func.attrs:
                continue
            require_legalized(func, gv.name_hint, "FluidMLPlan")
            require_unplanned(func, gv.name_hint, "FluidMLPlan")
        if any(is_dataflow_form(f) for _, f in funcs):
            passes = [ReorderForMemory()] if self.reorder else []
            # TVM's own dataflow lowering for the target; the default pipeline's later run is a no-op.
            passes += dataflow_lower_passes(self.target.target)
            mod = tvm.transform.Sequential(passes)(mod)
        mod = WriteIntoOutput()(mod)
        if self.scratch:
            mod = LiftKernelScratch()(mod)
        return self.plan_memory(mod)


def dataflow_lower_passes(target) -> list:
    """TVM's dataflow-lowering stage for ``target`` (a ``tvm.target.Target``)."""
    try:
        return relax.pipeline.dataflow_lower_passes(target)
    except AttributeError:
        # TVM 0.27's cpu_generic/__init__.py does not re-export this stage; its module has it.
        return cpu_pipeline.dataflow_lower_passes(target)
