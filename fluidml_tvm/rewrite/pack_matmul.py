"""Rewrite matmuls and conv2ds with a constant weight to kernels that read the weight packed (or in place)."""

from __future__ import annotations

import tvm
from tvm import relax, te, topi

from ..analysis.packing import PackDecision

# Names of the kernels' compute blocks; schedule rules find the weight layout from the access, not the name.
PACKED_MATMUL = "packed_matmul"
DENSE_MATMUL = "dense_matmul"
PACKED_CONV2D = "packed_conv2d"


def rewrite_packed_matmuls(mod: tvm.IRModule, gv: tvm.ir.GlobalVar, decisions: list[PackDecision]) -> tvm.IRModule:
    """Return ``mod`` with each decided ``R.matmul`` of ``mod[gv]`` replaced by a packed or dense ``call_tir``.

    The packed weight is ``R.layout_transform(W)`` of the original constant, which
    LegalizeOps + FoldConstant turn into one new constant; the old one loses its
    last user and is dropped.
    """
    if not decisions:
        return mod
    mutator = _PackMatmul(mod, {d.var: d for d in decisions})
    func = relax.analysis.remove_all_unused(mutator.visit_expr(mod[gv]))
    mutator.builder_.update_func(gv, func)
    return mutator.builder_.get()


def pack_index_map(decision: PackDecision):
    """``[K, N]`` (or ``[N, K]`` when transposed) to ``[ceil(N/n), K, n]``; OIHW to ``[ceil(O/n), I, H, W, n]``."""
    b = decision.block
    if decision.layout == "conv2d":
        return lambda o, i, r, s: (o // b, i, r, s, o % b)
    if decision.transposed:
        return lambda n, k: (n // b, k, n % b)
    return lambda k, n: (n // b, k, n % b)


def packed_matmul(x: te.Tensor, wp: te.Tensor, n: int) -> te.Tensor:
    """``x[..., K] @ W[K, n]`` with ``W`` stored as ``wp[ceil(n/b), K, b]``."""
    *_, k_extent = x.shape
    b = int(wp.shape[2])
    k = te.reduce_axis((0, k_extent), name="k")
    padded = int(wp.shape[0]) * b
    acc = te.compute(
        (*x.shape[:-1], padded),
        lambda *i: te.sum(x[(*i[:-1], k)] * wp[i[-1] // b, k, i[-1] % b], axis=k),
        name=PACKED_MATMUL,
    )
    return _unpad(acc, n)


def dense_matmul(x: te.Tensor, w: te.Tensor, block: int = 1) -> te.Tensor:
    """``x[..., K] @ W[N, K]^T`` reading ``W`` where it is (no transposed copy).

    The kernel copies ``block`` rows of ``W`` at a time into a ``[K, block]`` panel
    (a schedule computes each panel where it is used, so no whole copy exists)
    and multiplies like :func:`packed_matmul`; a last partial panel repeats row ``N-1``.
    """
    n, k_extent = (int(s) for s in w.shape)
    blocks = -(-n // block)
    row = (lambda j: j) if blocks * block == n else (lambda j: te.min(j, n - 1))
    panel = te.compute((blocks, k_extent, block), lambda jo, k, jb: w[row(jo * block + jb), k],
                       name=f"{DENSE_MATMUL}_panel")
    k = te.reduce_axis((0, k_extent), name="k")
    acc = te.compute(
        (*x.shape[:-1], blocks * block),
        lambda *i: te.sum(x[(*i[:-1], k)] * panel[i[-1] // block, k, i[-1] % block], axis=k),
        name=DENSE_MATMUL,
    )
    return _unpad(acc, n)


def packed_conv2d(x: te.Tensor, wp: te.Tensor, out_channels: int, strides, padding, dilation) -> te.Tensor:
    """NCHW conv2d with the OIHW weight stored as ``wp[ceil(O/b), I, kh, kw, b]``."""
    _, in_channels, height, width = (int(s) for s in x.shape)
    blocks, _, kh, kw, b = (int(s) for s in wp.shape)
    (sh, sw), (dh, dw) = strides, dilation
    padding = list(padding) * (4 // len(padding))
    top, left, bottom, right = padding
    if any(padding):
        x = topi.nn.pad(x, [0, 0, top, left], [0, 0, bottom, right], name="pad")
    oh = (height + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (width + left + right - dw * (kw - 1) - 1) // sw + 1
    rc = te.reduce_axis((0, in_channels), name="rc")
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    acc = te.compute(
        (int(x.shape[0]), blocks * b, oh, ow),
        lambda n, o, y, z: te.sum(
            x[n, rc, y * sh + ry * dh, z * sw + rx * dw] * wp[o // b, rc, ry, rx, o % b], axis=[rc, ry, rx]
        ),
        name=PACKED_CONV2D,
    )
    if blocks * b == out_channels:
        return acc
    return te.compute((acc.shape[0], out_channels, oh, ow), lambda *i: acc(*i), name=f"{PACKED_CONV2D}_unpad")


def _unpad(acc: te.Tensor, n: int) -> te.Tensor:
    if int(acc.shape[-1]) == n:
        return acc
    return te.compute((*acc.shape[:-1], n), lambda *i: acc(*i), name=f"{acc.op.name}_unpad")


@relax.expr_functor.mutator
class _PackMatmul(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, decisions: dict):
        super().__init__(mod)
        self.decisions = decisions

    def visit_var_binding_(self, binding):
        decision = self.decisions.get(binding.var)
        if decision is None:
            super().visit_var_binding_(binding)
            return
        x = self.visit_expr(binding.value.args[0])
        if decision.layout == "conv2d":
            a = binding.value.attrs
            packed = self.builder_.emit(
                relax.op.layout_transform(decision.weight, pack_index_map(decision),
                                          pad_value=0.0 if decision.padded_n != decision.n else None),
                name_hint="packed_weight",
            )
            call = self.builder_.call_te(
                packed_conv2d, x, packed, decision.n, [int(v) for v in a.strides], [int(v) for v in a.padding],
                [int(v) for v in a.dilation], primfunc_name_hint=PACKED_CONV2D,
            )
        elif decision.layout == "dense":
            call = self.builder_.call_te(dense_matmul, x, decision.weight, decision.block,
                                         primfunc_name_hint=DENSE_MATMUL)
        else:
            pad = 0.0 if decision.padded_n != decision.n else None
            packed = self.builder_.emit(
                relax.op.layout_transform(decision.weight, pack_index_map(decision), pad_value=pad),
                name_hint="packed_weight",
            )
            call = self.builder_.call_te(packed_matmul, x, packed, decision.n, primfunc_name_hint=PACKED_MATMUL)
        # Same name (its ONNX node's), same kind: a dataflow block's output stays an output.
        output = self.builder_.current_block_is_dataflow() and not isinstance(binding.var, relax.DataflowVar)
        new_var = (self.builder_.emit_output if output else self.builder_.emit)(call, name_hint=binding.var.name)
        self.set_var_remap(binding.var, new_var)
