"""ScheduleKernels: a default CPU schedule for every PrimFunc left unscheduled after fusion."""

from __future__ import annotations

import tvm
from tvm.s_tir import dlight as dl

from ..schedule import cpu_rules
from ..targets import describe


@tvm.transform.module_pass(opt_level=0, name="fluidml_tvm.ScheduleKernels")
class ScheduleKernels:
    """Schedule every PrimFunc without the ``tirx.is_scheduled`` attribute.

    Place it after ``FuseTIR`` (end of the ``"fuse"`` stage) and before
    FluidMLPlan: the fused kernels are final there, and a MetaSchedule database
    applied earlier marks its functions scheduled, which this pass skips.
    Rules (``fluidml_tvm.schedule``), first match wins: register-tiled matmul
    (packed, dense and batch, with epilogue), direct conv2d, row reductions,
    injective.  A function no rule fits is left as it is.

    Parameters
    ----------
    target : TargetDescription
        Vector width and registers come from it (or from ``describe(target)``);
        only CPU targets are scheduled.
    shared_row_nests : bool
        Schedule softmax/layer norm with all blocks under one row loop (dlight's
        rule): slightly faster, but FluidMLPlan can then no longer write their
        output over their input (a larger arena).
    """

    def __init__(self, target, shared_row_nests: bool = False):
        self.target = describe(target)
        self.shared_row_nests = shared_row_nests

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        if not self.target.cpu:
            return mod
        apply = dl.ApplyDefaultSchedule(*cpu_rules(self.target, self.shared_row_nests))
        with self.target.target:  # dlight hands the target in scope to the rules; ours were given theirs
            return apply(mod)
