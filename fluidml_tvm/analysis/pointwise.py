"""Which outputs of a PrimFunc may be written over which of its inputs.

An output may overwrite an input when the kernel never reads an element of the
input after writing that element of the output: the input is read in full by
loop nests that finish before the output's writer starts (a softmax's max and
sum, a layer norm's mean), and the writer itself reads it only at the index it
writes.
"""

from __future__ import annotations

import functools

import tvm
import tvm_ffi
from tvm import s_tir, tirx


def inplace_pairs(func: tirx.PrimFunc) -> frozenset:
    """Return the ``(input param index, output param index)`` pairs safe to alias.

    Conservative: the output has one writer block that touches it pointwise;
    every other block reading the input comes before the writer in a loop
    nest of its own, so no schedule interleaves a later read with the write.
    """
    return _inplace_pairs_cached(func)


@functools.lru_cache(maxsize=4096)
def _inplace_pairs_cached(func) -> frozenset:
    try:
        sch = s_tir.Schedule(func)
        blocks = [sch.get(b) for b in sch.get_child_blocks(sch.get_sblock("root"))]
        nests = [_outer_loop(sch, b) for b in sch.get_child_blocks(sch.get_sblock("root"))]
    except (tvm.error.TVMError, ValueError, AttributeError):
        return frozenset()
    # A buffer parameter's position in func.params is its call argument's position.
    params = [p if _is_buffer(p) else None for p in func.params]
    writers = {}
    for pos, block in enumerate(blocks):
        for region in block.writes:
            writers.setdefault(_param_index(params, region.source), []).append(pos)
    writers.pop(None, None)
    pairs = set()
    for out_idx, positions in writers.items():
        if len(positions) != 1:
            continue
        w = positions[0]
        out_buf = params[out_idx]
        if not _pointwise(blocks[w], blocks[w].writes, out_buf):
            continue
        for in_idx, in_buf in enumerate(params):
            if in_buf is None or in_idx in writers or not _same_type(in_buf, out_buf):
                continue
            if _safe_reader_set(blocks, nests, w, in_buf):
                pairs.add((in_idx, out_idx))
    return frozenset(pairs)


def _safe_reader_set(blocks, nests, writer, buf) -> bool:
    readers = [i for i, b in enumerate(blocks) if any(r.source.same_as(buf) for r in b.reads)]
    for i in readers:
        if i > writer:
            return False
        if i == writer:
            if not _pointwise(blocks[i], blocks[i].reads, buf):
                return False
        elif nests[i] is None or nests[writer] is None or nests[i].same_as(nests[writer]):
            return False
    return True


def _pointwise(block, regions, buf) -> bool:
    """True when ``block`` touches ``buf`` only at [v0, v1, ...] over its full extent."""
    iters = list(block.iter_vars)
    shape = list(buf.shape)
    if len(iters) != len(shape) or any(int(iv.iter_type) != 0 for iv in iters):
        return False
    for iv, extent in zip(iters, shape):
        if not (_is_const(iv.dom.min, 0) and _equal(iv.dom.extent, extent)):
            return False
    for region in regions:
        if not region.source.same_as(buf):
            continue
        for rng, iv in zip(region.region, iters):
            if not (rng.min.same_as(iv.var) and _is_const(rng.extent, 1)):
                return False
    return True


def _same_type(a, b) -> bool:
    if a.dtype != b.dtype or len(a.shape) != len(b.shape):
        return False
    return all(_equal(x, y) for x, y in zip(a.shape, b.shape))


def _equal(x, y) -> bool:
    """Equal extents: the same constant, or the same symbolic expression."""
    if isinstance(x, tirx.IntImm) and isinstance(y, tirx.IntImm):
        return int(x.value) == int(y.value)
    return tvm_ffi.structural_equal(x, y, map_free_vars=False)


def _is_buffer(var) -> bool:
    return isinstance(var.ty, tirx.BufferType)


def _param_index(params, buf):
    for i, p in enumerate(params):
        if p is not None and p.same_as(buf):
            return i
    return None


def _is_const(expr, value) -> bool:
    return isinstance(expr, tirx.IntImm) and int(expr.value) == value


def _outer_loop(sch, block_rv):
    loops = sch.get_loops(block_rv)
    return sch.get(loops[0]) if loops else None
