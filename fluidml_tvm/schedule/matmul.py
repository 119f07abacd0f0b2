"""Register-tiled matmul: packed and dense weights, batch matmul, with the fused epilogue.

The reduction block ``C[..., i, j] += A[..., i, k] * B(k, j)`` is cut into an
``mr x nr`` register tile accumulated in a local buffer: ``nr`` columns are two
vectors (or the packed weight's column block), ``mr`` rows as many as the
registers allow.  Loops run ``batch, j_outer (parallel), i_outer, k, i, j``: one
thread owns a column panel of ``B`` (``K x nr``, L1/L2-resident) and streams the
rows of ``A`` past it.  A weight read along ``k`` (``[N, K]``, ``dense``) is
first copied panel by panel into a ``[K, nr]`` buffer.  The elementwise
epilogue (bias, GELU, residual, scale) is computed on the tile while it is
still in registers.
"""

from __future__ import annotations

from tvm import s_tir, tirx

from ..targets import TargetDescription
from .blocks import (RuleDoesNotApply, divisor_at_most, extents, has_trivial_binding, inline_all_but_last,
                     reads, single_reduction, vector_tile)


def schedule_matmul(sch: s_tir.Schedule, target: TargetDescription) -> bool:
    """Schedule a (batch) matmul with optional injective producers and epilogue; False if not one."""
    found = single_reduction(sch)
    if found is None:
        return False
    blocks, kinds, pos = found
    main = blocks[pos]
    kind = kinds[pos]
    if not (kind.endswith("R") and kind[:-1] == "S" * (len(kind) - 1) and len(kind) >= 3):
        return False
    if not has_trivial_binding(sch, main):
        return False
    layout = _weight_layout(sch, main)
    if layout is None:
        return False
    # a producer of the weight is a panel copy, computed per column panel; others are inlined
    panels = [b for b in blocks[:pos] if any(w.source.same_as(layout[2]) for w in sch.get(b).writes)]
    for block in reversed(blocks[:pos]):
        if any(block.same_as(p) for p in panels):
            continue
        try:
            sch.compute_inline(block)
        except s_tir.ScheduleError:
            return False
    epilogue = inline_all_but_last(sch, blocks[pos + 1:])
    _tile(sch, main, epilogue, panels, layout, target)
    return True


def _weight_layout(sch, block):
    """``("packed"|"row"|"dense", block, B)`` from how the weight ``B`` is indexed; None if not a matmul."""
    ivars = [iv.var.name for iv in sch.get(block).iter_vars]
    i, j, k = ivars[-3], ivars[-2], ivars[-1]
    accesses = reads(sch, block)
    if len(accesses) != 2:
        return None
    a, b = accesses
    used = lambda acc: frozenset().union(*acc.index_vars)  # noqa: E731
    if j in used(a) or i not in used(a) or k not in used(a):
        a, b = b, a
    if j in used(a) or i not in used(a) or k not in used(a) or i in used(b) or not {j, k} <= used(b):
        return None
    last = b.index_vars[-1]
    if last == {j} and len(b.index_vars) >= 3 and b.index_vars[-3] == {j}:
        return ("packed", int(b.buffer.shape[-1]), b.buffer)
    if last == {j}:
        return ("row", 0, b.buffer)
    if last == {k}:
        return ("dense", 0, b.buffer)
    return None


def _tile(sch, main, epilogue, panels, layout, target: TargetDescription) -> None:
    *batch, i, j, k = sch.get_loops(main)
    m, n, k_extent = extents(sch, [i, j, k])
    lanes = target.lanes
    if layout[0] == "packed" and n % layout[1] == 0:
        nr = layout[1]
    else:
        nr = vector_tile(n, lanes)
    vectors = -(-nr // lanes)
    mr = divisor_at_most(m, max(1, (target.registers - 4) // vectors), 1)
    ku = divisor_at_most(k_extent, 2)

    dense_b = layout[0] == "dense" and not panels
    if dense_b:
        b_index = next(i for i, r in enumerate(sch.get(main).reads) if r.source.same_as(layout[2]))
    jo, ji = sch.split(j, [None, nr])
    io, ii = sch.split(i, [None, mr])
    ko, ki = sch.split(k, [None, ku])
    sch.reorder(jo, io, ko, ki, ii, ji)
    outer = sch.fuse(*batch, jo) if batch else jo
    sch.parallel(outer)

    if epilogue is None:
        acc = sch.cache_write(main, 0, "local")
        sch.reverse_compute_at(acc, io, preserve_unit_loops=True)
        tail = acc
    else:
        sch.set_scope(main, 0, "local")
        sch.reverse_compute_at(epilogue, io, preserve_unit_loops=True)
        tail = epilogue
        _require_constant_extents(sch, tail)
    _vectorize_inner(sch, tail)

    if dense_b:
        panel = sch.cache_read(main, b_index, "global")
        sch.transform_layout(panel, ("write", 0), lambda jj, kk: (kk, jj))
        sch.compute_at(panel, outer, preserve_unit_loops=True)
        _vectorize_inner(sch, panel)
    for panel in panels:
        sch.compute_at(panel, outer, preserve_unit_loops=True)
        _vectorize_inner(sch, panel)

    if nr > lanes and nr % lanes == 0:
        # one vector per statement: LLVM turns a 3-vector-wide statement into 20x slower code
        jv, ji = sch.split(ji, [None, lanes])
        sch.unroll(jv)
    sch.vectorize(ji)
    sch.unroll(ii)
    sch.unroll(ki)
    init = sch.decompose_reduction(main, ko)
    sch.vectorize(sch.get_loops(init)[-1])


def _require_constant_extents(sch, block) -> None:
    """Refuse an epilogue the tile cannot own: a layout-changing one (a head split folded into
    the matmul) whose permuted region straddles the tile gets loops of symbolic extent, which
    either fail to vectorize or cover only part of each tile (wrong results)."""
    for loop in sch.get_loops(block):
        if not isinstance(sch.get(loop).extent, tirx.IntImm):
            raise RuleDoesNotApply(f"epilogue loop of symbolic extent {sch.get(loop).extent}")


def _vectorize_inner(sch, block) -> None:
    """Vectorize the innermost loop of ``block`` when the schedule allows it."""
    loops = sch.get_loops(block)
    if not loops:
        return
    try:
        sch.vectorize(loops[-1])
    except s_tir.ScheduleError:
        pass
