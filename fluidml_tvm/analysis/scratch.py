"""Kernel-internal scratch: buffers a PrimFunc allocates for itself on every call."""

from __future__ import annotations

import tvm
from tvm import s_tir, tirx

from ..memory.sizes import static_nbytes


def scratch_buffers(func: tirx.PrimFunc) -> list:
    """Global-scope buffers allocated in the root block, with a static size."""
    root = getattr(func.body, "block", None)
    if root is None:
        return []
    return [b for b in root.alloc_buffers
            if str(b.ty.storage_scope) in ("global", "") and _nbytes(b) is not None]


def scratch_bytes(func: tirx.PrimFunc) -> int:
    return sum(_nbytes(b) for b in scratch_buffers(func))


def liftable_scratch(func: tirx.PrimFunc) -> list:
    """Scratch buffers the kernel materializes in full, so they can live in the caller's arena.

    A buffer touched by blocks in two or more root-level loop nests is
    allocated at the root at full size whatever TVM's lowering does; one used
    inside a single nest would be compacted by TVM, so it stays.
    """
    buffers = scratch_buffers(func)
    if not buffers:
        return []
    try:
        sch = s_tir.Schedule(func)
        block_rvs = sch.get_child_blocks(sch.get_sblock("root"))
    except (tvm.error.TVMError, ValueError):
        return []
    nests: dict = {}
    for rv in block_rvs:
        block = sch.get(rv)
        loops = sch.get_loops(rv)
        nest = sch.get(loops[0]) if loops else block
        for region in list(block.reads) + list(block.writes):
            nests.setdefault(region.source, []).append(nest)
    out = []
    for buf in buffers:
        seen = nests.get(buf, [])
        if len(_distinct(seen)) >= 2:
            out.append(buf)
    return out


def _distinct(nodes) -> list:
    out = []
    for n in nodes:
        if not any(n.same_as(m) for m in out):
            out.append(n)
    return out


def scratch_by_callee(mod, liveness) -> dict:
    """Scratch bytes each PrimFunc the function calls still allocates for itself."""
    funcs = {gv.name_hint: f for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)}
    return {c.callee: scratch_bytes(funcs[c.callee]) for c in liveness.calls if c.callee in funcs}


def _nbytes(buf):
    return static_nbytes(list(buf.ty.shape), str(buf.ty.dtype))
