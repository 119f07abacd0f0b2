"""Direct convolution (NCHW, grouped and depthwise too): output-channel x width register tile.

``out[n, c, h, w] += pad[n, ., h*s + r, w*s + q] * W[c, ., r, q]``: a tile of
``cr`` channels by ``wr`` output columns stays in registers over the whole
reduction; batch, channel blocks and rows run in parallel.  With the weight
packed as ``[O/n, I, kh, kw, n]`` (PackWeights) the vectors run along output
channels and each input pixel is one broadcast, whatever the width or stride;
otherwise (depthwise, grouped) they run along ``w``.  The padding copy is its
own parallel loop; the epilogue (bias, ReLU, residual) is applied to the tile
in registers.
"""

from __future__ import annotations

from tvm import s_tir

from ..targets import TargetDescription
from .blocks import (divisor_at_most, extents, has_trivial_binding, inline_all_but_last, reads,
                     single_reduction, vector_tile)
from .elementwise import parallel_vectorize


def schedule_conv2d(sch: s_tir.Schedule, target: TargetDescription) -> bool:
    """Schedule one 4-D spatial x (1..3)-D reduction block with padding producers and an epilogue."""
    found = single_reduction(sch)
    if found is None:
        return False
    blocks, kinds, pos = found
    main, kind = blocks[pos], kinds[pos]
    if not kind.startswith("SSSS") or set(kind[4:]) != {"R"} or not has_trivial_binding(sch, main):
        return False
    epilogue = inline_all_but_last(sch, blocks[pos + 1:])
    producers = blocks[:pos]
    n, c, h, w, *red = sch.get_loops(main)
    _, c_extent, _, w_extent = extents(sch, [n, c, h, w])
    block = _packed_channel_block(sch, main)
    if block:
        cr, wr = _channel_tile(c_extent, w_extent, block, target)
        co, ci = sch.split(c, [None, cr])
        wo, wi = sch.split(w, [None, wr])
        sch.reorder(n, co, h, wo, *red, wi, ci)
        vector_loop, unrolled = ci, wi
    else:
        lanes = target.lanes
        wr = vector_tile(w_extent, lanes)
        vectors = -(-wr // lanes)
        cr = divisor_at_most(c_extent, max(1, (target.registers - 4) // vectors))
        co, ci = sch.split(c, [None, cr])
        wo, wi = sch.split(w, [None, wr])
        sch.reorder(n, co, h, wo, *red, ci, wi)
        vector_loop, unrolled = wi, ci
    outer = sch.fuse(n, co, h)
    sch.parallel(outer)
    if epilogue is None:
        acc = sch.cache_write(main, 0, "local")
        sch.reverse_compute_at(acc, wo, preserve_unit_loops=True)
        tail = acc
    else:
        sch.set_scope(main, 0, "local")
        sch.reverse_compute_at(epilogue, wo, preserve_unit_loops=True)
        tail = epilogue
    if block:
        # channels innermost in the register tile, so each accumulator is one whole vector
        sch.transform_layout(main, ("write", 0), lambda n_, c_, h_, w_: (n_, h_, w_, c_))
    _try_vectorize(sch, sch.get_loops(tail)[-1])
    sch.vectorize(vector_loop)
    sch.unroll(unrolled)
    init = sch.decompose_reduction(main, red[0])
    _try_vectorize(sch, sch.get_loops(init)[-1])
    for block in producers:
        parallel_vectorize(sch, block, target)
    return True


def _packed_channel_block(sch, block) -> int:
    """``n`` when the weight is read as ``wp[c // n, ., ., ., c % n]`` (packed), else 0."""
    ivars = [iv.var.name for iv in sch.get(block).iter_vars]
    channel = ivars[1]
    for access in reads(sch, block):
        if len(access.index_vars) == 5 and access.index_vars[0] == {channel} and access.index_vars[-1] == {channel}:
            return int(access.buffer.shape[-1])
    return 0


def _channel_tile(channels: int, width: int, block: int, target: TargetDescription) -> tuple[int, int]:
    """(channels per tile: whole vectors dividing the packed block, output columns per tile): the largest tile."""
    best = (1, 1)
    for cr in (block, 2 * target.lanes, target.lanes):
        if cr > block or block % cr or channels % cr:
            continue
        vectors = -(-cr // target.lanes)
        wr = divisor_at_most(width, max(1, (target.registers - 8) // vectors))
        if cr * wr > best[0] * best[1]:
            best = (cr, wr)
    return best


def _try_vectorize(sch, loop) -> None:
    try:
        sch.vectorize(loop)
    except s_tir.ScheduleError:
        pass
