"""PlanMemory: put every intermediate tensor of each Relax function in one arena."""

from __future__ import annotations

import tvm
from tvm import relax

from ..analysis.memory_plan import PLAN_ATTR, plan_function, record_plan
from ..analysis.phase import require_lowered
from ..analysis.validate import validate_function
from ..rewrite.arena import rewrite_function
from ..rewrite.module import with_functions
from ..targets import describe


@tvm.transform.module_pass(opt_level=0, name="fluidml_tvm.PlanMemory")
class PlanMemory:
    """Plan offsets of all ``R.builtin.alloc_tensor`` in one arena per device and scope.

    Runs on the lowered form: after ``CallTIRRewrite``, before
    ``StaticPlanBlockMemory`` (which then only sees what is left: returned
    tensors and tensors without a static size bound).  Each planned function
    gets a ``fluidml_tvm.memory_plan`` attribute with the plan as JSON.
    On a target whose storage cannot be offset (OpenCL) the same lifetimes
    plan whole-buffer reuse instead.
    """

    def __init__(self, target, planner: str = "best", inplace: bool = True, validate: bool = False,
                 solve_seconds: float = 0.0):
        self.target = describe(target)
        self.solve_seconds = solve_seconds
        self.planner = planner
        self.inplace = inplace
        self.validate = validate

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        offsets = self.target.offsets
        updates = {}
        for gv, func in mod.functions.items():
            if not isinstance(func, relax.Function) or (func.attrs and PLAN_ATTR in func.attrs):
                continue
            require_lowered(func, gv.name_hint, "fluidml_tvm.PlanMemory")
            plan, liveness = plan_function(mod, func, gv.name_hint, planner=self.planner,
                                           inplace=self.inplace, offsets=offsets,
                                           solve_seconds=self.solve_seconds)
            new_func = rewrite_function(func, plan.placements(liveness), plan.storages) if plan.tensors else func
            new_func = record_plan(new_func, plan)
            if self.validate:
                validate_function(mod, new_func, gv.name_hint)
            updates[gv] = new_func
        return with_functions(mod, updates)

