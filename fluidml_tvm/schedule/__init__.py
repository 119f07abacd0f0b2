"""Default schedules for CPU kernels, one rule per module; ``schedule_function`` tries them in order.

``database`` opens MetaSchedule tuning databases (yours, or the ones shipped in ``schedules/``).
"""

from __future__ import annotations

import tvm
from tvm import s_tir, tirx

from ..analysis.schedule_rules import RULE_ATTR, SCHEDULED_ATTR, is_scheduled
from ..targets import describe
from .conv2d import schedule_conv2d
from .elementwise import schedule_elementwise
from .matmul import schedule_matmul
from .reduction import schedule_reduction

def schedule_function(func: tirx.PrimFunc, target, shared_row_nests: bool = False
                      ) -> tuple[tirx.PrimFunc, str | None]:
    """Return ``func`` scheduled by the first rule that applies, and that rule's name (None: unchanged).

    ``target``: a :class:`~fluidml_tvm.targets.TargetDescription` (or anything
    :func:`~fluidml_tvm.targets.describe` takes), which sizes the tiles.
    ``shared_row_nests``: see :mod:`fluidml_tvm.schedule.reduction`.
    """
    target = describe(target)
    rules = [
        ("matmul", lambda sch: schedule_matmul(sch, target)),
        ("conv2d", lambda sch: schedule_conv2d(sch, target)),
        ("reduction", lambda sch: schedule_reduction(sch, target, shared_row_nests)),
        ("elementwise", lambda sch: schedule_elementwise(sch, target)),
    ]
    for name, rule in rules:
        sch = s_tir.Schedule(tvm.IRModule({"main": func}))
        try:
            result = rule(sch)
        except (s_tir.ScheduleError, RuntimeError, ValueError, IndexError):
            continue
        if result:
            scheduled = result if isinstance(result, s_tir.Schedule) else sch
            return scheduled.mod["main"].with_attr(SCHEDULED_ATTR, True).with_attr(RULE_ATTR, name), name
    return func, None


__all__ = ["is_scheduled", "schedule_function", "SCHEDULED_ATTR"]
