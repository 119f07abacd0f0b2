"""Injective kernels (elementwise, broadcast, reshape, transpose): one parallel, vectorized loop nest."""

from __future__ import annotations

from tvm import s_tir

from ..targets import TargetDescription
from .blocks import extents, iter_kinds

# Below this many elements a kernel runs on one thread: waking the pool costs more.
MIN_PARALLEL_ELEMENTS = 16384


def schedule_elementwise(sch: s_tir.Schedule, target: TargetDescription) -> bool:
    """Inline what inlines, then ``parallel(outer) . vectorize(inner)`` each remaining loop nest.

    False if some block is not injective.  A kernel with several outputs (``split``)
    keeps one loop nest per output.
    """
    blocks = list(sch.get_child_blocks(sch.get_sblock("root")))
    if not blocks or any(set(iter_kinds(sch, b)) - {"S"} for b in blocks):
        return False
    outputs = list(sch.get_output_blocks(sch.get_sblock("root")))
    for block in blocks:
        if not any(block.same_as(o) for o in outputs):
            try:
                sch.compute_inline(block)
            except s_tir.ScheduleError:
                pass
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        parallel_vectorize(sch, block, target)
    return True


def parallel_vectorize(sch: s_tir.Schedule, block, target: TargetDescription) -> None:
    """Vectorize ``block``'s innermost loop by the lanes (when they divide it); run the rest in parallel.

    The outer loops are fused (one div/mod per row, not per element).
    """
    loops = sch.get_loops(block)
    if not loops:
        return
    sizes = extents(sch, loops)
    total = 1
    for e in sizes:
        total *= e
    lanes = target.lanes
    if len(loops) == 1:
        outer = loops[0]
        if sizes[0] % lanes == 0 and sizes[0] > lanes:
            outer, inner = sch.split(outer, [None, lanes])
            sch.vectorize(inner)
    else:
        if sizes[-1] % lanes == 0:
            rest, inner = sch.split(loops[-1], [None, lanes])
            sch.vectorize(inner)
            if len(loops) > 2 or sizes[-1] == lanes:
                outer_loops = loops[:-1]
            else:
                outer_loops = loops[:-1] + [rest]
        else:
            outer_loops = loops[:-1]
        outer = sch.fuse(*outer_loops) if len(outer_loops) > 1 else outer_loops[0]
    if total >= MIN_PARALLEL_ELEMENTS:
        sch.parallel(outer)
