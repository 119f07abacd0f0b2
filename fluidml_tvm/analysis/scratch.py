"""Kernel-internal scratch: buffers a PrimFunc allocates for itself on every call."""

from __future__ import annotations

from tvm import tirx

from ..memory.sizes import static_nbytes
from .nests import kernel_nests


def scratch_buffers(func: tirx.PrimFunc) -> list:
    """Global-scope buffers allocated in the root block, with a static size."""
    root = getattr(func.body, "block", None)
    if root is None:
        return []
    return [b for b in root.alloc_buffers
            if str(b.ty.storage_scope) in ("global", "") and _nbytes(b) is not None]


def scratch_peak_bytes(func: tirx.PrimFunc) -> int:
    """The most materialized scratch (see :func:`liftable_scratch`) live in any one loop nest.

    TVM's lowering reuses a scratch buffer's memory once the nests that touch
    it are done, so this, not the sum, is what a call needs.  A buffer used
    inside one nest is compacted by TVM to what one iteration touches (a
    matmul's register tile, a per-thread panel) and is not counted.
    """
    nests = kernel_nests(func)
    if nests is None:
        return sum(_nbytes(b) for b in scratch_buffers(func))
    live = {}
    for buf in liftable_scratch(func):
        first, last = nests.slots(buf)
        for k in range(first, last + 1):
            live[k] = live.get(k, 0) + _nbytes(buf)
    return max(live.values(), default=0)


def liftable_scratch(func: tirx.PrimFunc) -> list:
    """Scratch buffers the kernel materializes in full, so they can live in the caller's arena.

    A buffer touched by two or more root-level loop nests is allocated at the
    root at full size whatever TVM's lowering does; one used inside a single
    nest would be compacted by TVM, so it stays.
    """
    nests = kernel_nests(func)
    if nests is None:
        return []
    out = []
    for buf in scratch_buffers(func):
        span = nests.slots(buf)
        if span is not None and span[0] != span[1]:
            out.append(buf)
    return out


def scratch_by_callee(mod, liveness) -> dict:
    """Peak scratch each PrimFunc the function calls still allocates for itself."""
    funcs = {gv.name_hint: f for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)}
    return {c.callee: scratch_peak_bytes(funcs[c.callee]) for c in liveness.calls if c.callee in funcs}


def _nbytes(buf):
    return static_nbytes(list(buf.ty.shape), str(buf.ty.dtype))
