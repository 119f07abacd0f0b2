"""ScheduleGPUKernels: a GPU schedule for every kernel left unscheduled, stamped with the rule's name."""

from __future__ import annotations

import tvm
from tvm import tirx

from ..rewrite.module import with_functions
from ..schedule import is_scheduled
from ..schedule.gpu import schedule_gpu_function
from ..targets import describe


@tvm.transform.module_pass(opt_level=0, name="fluidml_tvm.ScheduleGPUKernels")
class ScheduleGPUKernels:
    """Schedule every unscheduled PrimFunc with :func:`fluidml_tvm.schedule.gpu.schedule_gpu_function`.

    It takes the place of TVM's ``ApplyDefaultSchedule`` passes in an OpenCL
    pipeline; each scheduled kernel carries the name of its rule
    (:func:`fluidml_tvm.analysis.schedule_rules.schedule_rules` reads them).
    CPU targets are left to ScheduleKernels.
    """

    def __init__(self, target):
        self.target = describe(target)

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        if self.target.cpu:
            return mod
        updates = {}
        for gv, func in mod.functions.items():
            if isinstance(func, tirx.PrimFunc) and not is_scheduled(func):
                scheduled, rule = schedule_gpu_function(func, self.target)
                if rule is not None:
                    updates[gv] = scheduled
        return with_functions(mod, updates)  # keeps the module's vdevices (texture scopes)
