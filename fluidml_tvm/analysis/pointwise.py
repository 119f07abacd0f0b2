"""Which outputs of a PrimFunc may be written over which of its inputs.

An output may overwrite an input when the kernel never reads an element of the
input after writing that element of the output: the input is read in full by
loop nests that finish before the output's writer starts (a softmax's max and
sum, a layer norm's mean), and the writer itself reads it only at the index it
writes.
"""

from __future__ import annotations

import functools

import tvm_ffi
from tvm import tirx

from .nests import kernel_nests


def inplace_pairs(func: tirx.PrimFunc) -> frozenset:
    """Return the ``(input param index, output param index)`` pairs safe to alias.

    Conservative: the output has one writer block that touches it pointwise
    and nothing reads it before; every other block touching the input comes
    before the writer in a loop nest of its own, so no schedule interleaves a
    later read with the write.  The input may itself be written earlier in the
    kernel (a scratch buffer), so chains of in-place writes inside one kernel
    (softmax: scores -> exp -> output) are found too.
    """
    return _inplace_pairs_cached(func)


@functools.lru_cache(maxsize=4096)
def _inplace_pairs_cached(func) -> frozenset:
    nests = kernel_nests(func)
    if nests is None:
        return frozenset()
    blocks = nests.blocks
    # A buffer parameter's position in func.params is its call argument's position.
    params = [p if isinstance(p.ty, tirx.BufferType) else None for p in func.params]
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
        if not _pointwise(blocks[w], blocks[w].writes, out_buf) or _reads_before(blocks, w, out_buf):
            continue
        for in_idx, in_buf in enumerate(params):
            if in_buf is None or in_idx == out_idx or not _same_type(in_buf, out_buf):
                continue
            if _done_before_or_pointwise(nests, w, in_buf):
                pairs.add((in_idx, out_idx))
    return frozenset(pairs)


def _reads_before(blocks, writer, buf) -> bool:
    """The output is read before (or by) its writer: it would read the input's bytes."""
    return any(r.source.same_as(buf) for b in blocks[: writer + 1] for r in b.reads)


def _done_before_or_pointwise(nests, writer, buf) -> bool:
    """Every access to ``buf`` is in an earlier nest, or a pointwise read by the writer."""
    for i, block in enumerate(nests.blocks):
        reads = any(r.source.same_as(buf) for r in block.reads)
        writes = any(r.source.same_as(buf) for r in block.writes)
        if not (reads or writes):
            continue
        if i == writer:
            if writes or not _pointwise(block, block.reads, buf):
                return False
        elif i > writer or nests.nest[i] == nests.nest[writer]:
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


def _param_index(params, buf):
    for i, p in enumerate(params):
        if p is not None and p.same_as(buf):
            return i
    return None


def _is_const(expr, value) -> bool:
    return isinstance(expr, tirx.IntImm) and int(expr.value) == value
