"""Default GPU (OpenCL: Mali, Adreno) schedules: dlight's rules, TVM's Adreno rules, and ours for windows.

``schedule_gpu_function`` tries the rules in order and returns the first
schedule with the rule's name, which is stamped on the PrimFunc
(:data:`RULE_ATTR`) so a build can say which rule scheduled each kernel.
"""

from __future__ import annotations

import tvm
from tvm import tirx
from tvm.s_tir import dlight as dl

from ..analysis.schedule_rules import RULE_ATTR, SCHEDULED_ATTR
from ..targets import describe
from .gpu_window import WindowReduction


# dlight's rule that gives each output element one thread: heavy kernels must not get it.
FALLBACK = "gpu.Fallback"
# Ours, for depthwise/grouped conv and pooling (fluidml_tvm.schedule.gpu_window).
WINDOW = "fluidml.WindowReduction"


def gpu_rules(target) -> list[tuple[str, object]]:
    """(name, dlight ScheduleRule) in the order they are tried for ``target``."""
    target = describe(target)
    rules = []
    if "texture" in target.target.keys:
        # TVM's Adreno rules schedule the texture (NCHW4c) conv2d, its layout transforms and pools.
        rules += [("adreno.Conv2d", dl.adreno.Conv2d()), ("adreno.LayoutTransform", dl.adreno.LayoutTransform()),
                  ("adreno.Pool2D", dl.adreno.Pool2D())]
    rules += [("gpu.Matmul", dl.gpu.Matmul()), ("gpu.GEMV", dl.gpu.GEMV()), (WINDOW, WindowReduction()),
              ("gpu.Reduction", dl.gpu.Reduction()),
              ("gpu.GeneralReduction", dl.gpu.GeneralReduction()), (FALLBACK, dl.gpu.Fallback())]
    return rules


def schedule_gpu_function(func: tirx.PrimFunc, target) -> tuple[tirx.PrimFunc, str | None]:
    """``func`` scheduled by the first rule of :func:`gpu_rules` that applies, and that rule's name."""
    target = describe(target)
    tvm_target = func.attrs.get("target", target.target) if func.attrs else target.target
    for name, rule in gpu_rules(target):
        try:
            space = rule.apply(func, tvm_target, False)
        except (tvm.error.TVMError, RuntimeError, ValueError, IndexError, AssertionError):
            # One of TVM's rules failing on a kernel it claims (TVM 0.27's Adreno conv2d divides
            # by zero on a depthwise conv) leaves it to the next rule; a failure of ours is a bug.
            if name == WINDOW:
                raise
            continue
        if space is None:
            continue
        sch = space[0] if isinstance(space, (list, tuple)) else space
        scheduled = sch.mod["main"].with_attr(SCHEDULED_ATTR, True).with_attr(RULE_ATTR, name)
        return scheduled, name
    return func, None
