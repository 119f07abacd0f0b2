"""Default schedules for CPU kernels, one rule per module, each a dlight ``ScheduleRule`` (:func:`cpu_rules`).

``database`` opens MetaSchedule tuning databases (yours, or the ones shipped in ``schedules/``).
"""

from __future__ import annotations

import tvm
from tvm import s_tir, tirx
from tvm.s_tir import dlight as dl

from ..analysis.schedule_rules import RULE_ATTR, SCHEDULED_ATTR, is_scheduled
from ..targets import describe
from .blocks import RuleDoesNotApply
from .conv2d import schedule_conv2d
from .elementwise import schedule_elementwise
from .matmul import schedule_matmul
from .reduction import schedule_reduction

class CPURule(dl.ScheduleRule):
    """A CPU schedule rule as a dlight ``ScheduleRule``, sized by the target description it was made with.

    ``schedule(sch)`` returns a truthy value (or a new Schedule) when it
    scheduled the kernel; a schedule primitive refusing the kernel
    (``ScheduleError``) or the rule itself (``RuleDoesNotApply``) means it does
    not apply, and any other error is a bug that propagates. The scheduled function carries the rule's name
    (:data:`RULE_ATTR`).
    """

    name = ""

    def __init__(self, target):
        self.target = describe(target)

    def schedule(self, sch: s_tir.Schedule):
        raise NotImplementedError

    def apply(self, func: tirx.PrimFunc, _target, _tunable: bool) -> s_tir.Schedule | None:
        # The description this rule was made with decides, not the target in scope.
        sch = s_tir.Schedule(tvm.IRModule({"main": func}))
        try:
            result = self.schedule(sch)
        except (s_tir.ScheduleError, RuleDoesNotApply):
            return None
        if not result:
            return None
        scheduled = result if isinstance(result, s_tir.Schedule) else sch
        return s_tir.Schedule(tvm.IRModule({"main": scheduled.mod["main"].with_attr(RULE_ATTR, self.name)}))


class Matmul(CPURule):
    name = "matmul"

    def schedule(self, sch):
        return schedule_matmul(sch, self.target)


class Conv2d(CPURule):
    name = "conv2d"

    def schedule(self, sch):
        return schedule_conv2d(sch, self.target)


class Reduction(CPURule):
    name = "reduction"

    def __init__(self, target, shared_row_nests: bool = False):
        super().__init__(target)
        self.shared_row_nests = shared_row_nests

    def schedule(self, sch):
        return schedule_reduction(sch, self.target, self.shared_row_nests)


class Elementwise(CPURule):
    name = "elementwise"

    def schedule(self, sch):
        return schedule_elementwise(sch, self.target)


def cpu_rules(target, shared_row_nests: bool = False) -> list[CPURule]:
    """The CPU rules in the order they are tried (first match wins)."""
    return [Matmul(target), Conv2d(target), Reduction(target, shared_row_nests), Elementwise(target)]


def schedule_function(func: tirx.PrimFunc, target, shared_row_nests: bool = False
                      ) -> tuple[tirx.PrimFunc, str | None]:
    """Return ``func`` scheduled by the first rule of :func:`cpu_rules` that applies, and that rule's
    name (None: unchanged).

    ``target``: a :class:`~fluidml_tvm.targets.TargetDescription` (or anything
    :func:`~fluidml_tvm.targets.describe` takes), which sizes the tiles.
    ``shared_row_nests``: see :mod:`fluidml_tvm.schedule.reduction`.
    """
    target = describe(target)
    for rule in cpu_rules(target, shared_row_nests):
        sch = rule.apply(func, target.target, False)
        if sch is not None:
            return sch.mod["main"].with_attr(SCHEDULED_ATTR, True), rule.name
    return func, None


__all__ = ["is_scheduled", "schedule_function", "cpu_rules", "CPURule", "SCHEDULED_ATTR"]
