"""Row reductions with their injective neighbours (softmax, layer norm, mean): rows in parallel.

By default every block keeps its own loop nest: its leading spatial loops are
fused and run in parallel, and the innermost spatial loop of each injective
block is vectorized.  Separate nests let FluidMLPlan write a softmax's or
layer norm's output over its input (``analysis/pointwise.py`` proves that only
for blocks in nests of their own): on all-MiniLM-L6-v2 the arena is 1.38 MB
this way against 1.98 MB with one shared row nest.  ``shared_row_nests`` uses
dlight's CPU ``Reduction`` rule instead (all blocks under one row loop; a few
percent faster end to end, no in-place).
"""

from __future__ import annotations

from tvm import s_tir
from tvm.s_tir.dlight.cpu import Reduction

from ..targets import TargetDescription
from .blocks import extents, iter_kinds


def schedule_reduction(sch: s_tir.Schedule, target: TargetDescription,
                       shared_row_nests: bool = False) -> s_tir.Schedule | None:
    """Return a scheduled copy of ``sch``'s function, or None if it has no reduction."""
    func = sch.mod["main"]
    blocks = list(sch.get_child_blocks(sch.get_sblock("root")))
    kinds = [iter_kinds(sch, b) for b in blocks]
    if not any("R" in k for k in kinds):
        return None
    if shared_row_nests:
        try:
            scheduled = Reduction().apply(func, target.target, False)
        except (s_tir.ScheduleError, ValueError, IndexError):
            scheduled = None
        if isinstance(scheduled, list):
            scheduled = scheduled[0] if scheduled else None
        if scheduled is not None:
            return scheduled
    return _rows_in_parallel(sch, blocks, kinds, target)


def _rows_in_parallel(sch, blocks, kinds, target):
    for block, kind in zip(blocks, kinds):
        loops = sch.get_loops(block)
        if not loops or kind[0] != "S":
            continue
        lead = len(kind) - len(kind.lstrip("S"))
        if "R" not in kind and len(loops) > 1:
            try:
                inner = loops[-1]
                if extents(sch, [inner])[0] % target.lanes == 0:
                    _, vec = sch.split(inner, [None, target.lanes])
                    sch.vectorize(vec)
            except s_tir.ScheduleError:
                pass
            lead = min(lead, len(loops) - 1)
        outer = loops[:max(lead, 1)]
        try:
            fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
            sch.parallel(fused)
        except s_tir.ScheduleError:
            continue
    return sch
