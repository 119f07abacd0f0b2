"""Kernel-internal scratch: buffers a PrimFunc allocates for itself on every call."""

from __future__ import annotations

from tvm import tirx

from ..memory.sizes import static_nbytes


def scratch_bytes(func: tirx.PrimFunc) -> int:
    """Bytes of the global-scope buffers allocated in the root block (0 if unknown)."""
    root = getattr(func.body, "block", None)
    if root is None:
        return 0
    total = 0
    for buf in root.alloc_buffers:
        scope = buf.scope() if callable(getattr(buf, "scope", None)) else getattr(buf, "scope", "global")
        if str(scope) in ("global", ""):
            total += static_nbytes(list(buf.shape), str(buf.dtype)) or 0
    return total


def scratch_by_callee(mod, liveness) -> dict:
    """Scratch bytes of every PrimFunc the function calls, by callee name."""
    funcs = {gv.name_hint: f for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)}
    return {c.callee: scratch_bytes(funcs[c.callee]) for c in liveness.calls if c.callee in funcs}
