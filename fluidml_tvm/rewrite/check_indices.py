"""A kernel that checks a gather's indices and returns them in ``[0, n)``; the gather rewired to read them.

On a GPU (device code cannot raise) the indices are clamped instead: see :func:`emit_clamped_indices`.

The check is its own small serial kernel (one opaque TIR block, so fusion never
merges it into the gather and no schedule vectorizes or parallelizes the
assertion): one pass over the indices per call, however many times the
gather's output reads each index. Serial on purpose: in TVM 0.27 an assertion
failing inside a parallel loop is sometimes lost (one run here: 111 of 200 calls
with the same bad index raised, the others returned as if nothing happened).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te, tirx

from ..analysis.gather_indices import CHECK_ATTR, GatherSite
from ..analysis.schedule_rules import SCHEDULED_ATTR

ERROR_KIND = "IndexError"  # what the VM call raises in Python
# TVM's kOpaque: AnnotateTIROpPattern would call the extern block elementwise and fuse it.
OPAQUE = 8


def error_message(site: GatherSite) -> str:
    """The one-line error a failed check raises."""
    bounds = ", ".join(_range(n, site.wrap_negative) for n in site.extents)
    what = "index" if len(site.extents) == 1 else "index coordinates"
    return f"{site.label}: {what} out of range in {site.source} (allowed {bounds})"


def emit_checked_indices(bb: relax.BlockBuilder, site: GatherSite) -> relax.Expr:
    """Emit the check of ``site``'s indices; returns the checked indices (negatives wrapped if allowed)."""
    message = error_message(site)

    def checked_indices(indices):
        return te.extern(indices.shape, [indices], lambda ins, outs: _check_body(ins[0], outs[0], site, message),
                         name="checked_indices", dtype=str(indices.dtype))

    return bb.emit(bb.call_te(checked_indices, site.indices, primfunc_name_hint="checked_indices",
                                primfunc_attrs={"op_pattern": OPAQUE, SCHEDULED_ATTR: True, CHECK_ATTR: True}))


def emit_clamped_indices(bb: relax.BlockBuilder, site: GatherSite) -> relax.Expr:
    """Emit ``site``'s indices wrapped (if allowed) and clamped into ``[0, n)``: nothing is read out of
    bounds, nothing raises. A plain elementwise kernel, left for the GPU schedule rules to bind threads."""

    def clamped_indices(indices):
        def element(*index):
            x = indices(*index)
            n = _extent(site.extents, index[-1] if index else None, indices.dtype)
            value = tirx.Select(x < tirx.const(0, indices.dtype), x + n, x) if site.wrap_negative else x
            return tirx.max(tirx.min(value, n - tirx.const(1, indices.dtype)), tirx.const(0, indices.dtype))

        return te.compute(indices.shape, element, name="clamped_indices")

    return bb.emit(bb.call_te(clamped_indices, site.indices, primfunc_name_hint="clamped_indices",
                                primfunc_attrs={CHECK_ATTR: True}))


def constant_indices(site: GatherSite, clamp: bool) -> relax.Expr | None:
    """``site``'s constant indices wrapped (and, if ``clamp``, clamped) here at compile time, so no kernel runs
    on a constant (FoldConstant would run it on the host, and a GPU kernel cannot run there). None when the
    indices are not a constant, an extent is symbolic, or an index is out of range and not clamped (the check
    kernel then raises when the model runs)."""
    if not isinstance(site.indices, tvm.ir.GenericConst) or not all(isinstance(n, tirx.IntImm) for n in site.extents):
        return None
    x = site.indices.value.numpy()
    n = np.array([int(e) for e in site.extents], dtype=np.int64)
    n = n[0] if len(n) == 1 else n  # gather_nd: coordinate j (the last axis) against extents[j]
    wide = x.astype(np.int64)
    low = -n if site.wrap_negative else 0
    value = np.where(wide < 0, wide + n, wide) if site.wrap_negative else wide
    if clamp:
        value = np.clip(value, 0, n - 1)
    elif not np.all((wide >= low) & (wide < n)):
        return None
    return relax.const(value.astype(x.dtype), str(x.dtype))


def checked_gather(call: relax.Call, checked: relax.Expr) -> relax.Expr:
    """``call`` (a gather or scatter) using ``checked`` indices; a take in ``clip`` mode (a no-op on checked indices)
    so that TVM never legalizes it in its unchecked ``fast`` mode."""
    name = call.op.name
    if name == "relax.take":
        return relax.op.take(call.args[0], checked, call.attrs.axis, mode="clip")
    if name == "relax.gather_elements":
        return relax.op.gather_elements(call.args[0], checked, call.attrs.axis)
    if name == "relax.gather_nd":
        return relax.op.gather_nd(call.args[0], checked, call.attrs.batch_dims)
    if name == "relax.scatter_elements":
        return relax.op.scatter_elements(call.args[0], checked, call.args[2], call.attrs.axis, call.attrs.reduction)
    return relax.op.scatter_nd(call.args[0], checked, call.args[2], call.attrs.reduction)


def _check_body(src: tirx.Buffer, dst: tirx.Buffer, site: GatherSite, message: str) -> tirx.Stmt:
    loops = [tirx.Var(f"i{k}", "int64") for k in range(len(src.shape))]
    x = tirx.BufferLoad(src, loops)
    n = _extent(site.extents, loops[-1] if loops else None, src.dtype)
    low = -n if site.wrap_negative and not str(src.dtype).startswith("uint") else tirx.const(0, src.dtype)
    in_range = tirx.all(x >= low, x < n)
    value = tirx.Select(x < tirx.const(0, src.dtype), x + n, x) if site.wrap_negative else x
    stmt = tirx.SeqStmt([
        # The FFI constructor takes (condition, kind, message parts).
        tirx.AssertStmt(in_range, tvm.ir.StringImm(ERROR_KIND), [tvm.ir.StringImm(message)]),
        tirx.BufferStore(dst, value, loops),
    ])
    for var, extent in reversed(list(zip(loops, src.shape))):
        stmt = tirx.For(var, tirx.const(0, "int64"), extent, tirx.ForKind.SERIAL, stmt)
    return stmt


def _extent(extents, last, dtype):
    """The extent for the current element: gather_nd's coordinate ``j`` (the last axis) gets ``extents[j]``."""
    out = tirx.Cast(dtype, extents[-1])
    for j in range(len(extents) - 2, -1, -1):
        out = tirx.Select(last == j, tirx.Cast(dtype, extents[j]), out)
    return out


def _range(n, wrap_negative: bool) -> str:
    if isinstance(n, tirx.IntImm):
        n = int(n)
        return f"[{-n if wrap_negative else 0}, {n - 1}]"
    return f"[-{n}, {n} - 1]" if wrap_negative else f"[0, {n} - 1]"
