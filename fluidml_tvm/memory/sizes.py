"""Byte sizes of tensors, with symbolic dimensions bounded from above."""

from __future__ import annotations

import math

import tvm

# TVM's kAllocAlignment: kernels assume buffers start 64-byte aligned.
ALIGNMENT = 64


def align(nbytes: int, alignment: int = ALIGNMENT) -> int:
    return (nbytes + alignment - 1) // alignment * alignment


def static_nbytes(shape, dtype: str, upper_bounds: dict | None = None) -> int | None:
    """Bytes of a tensor, or None when a dimension is neither static nor bounded.

    A symbolic dimension is bounded by substituting every variable with its
    ``tir_var_upper_bound``; dimensions are products/sums of non-negative
    variables in practice, so that substitution bounds the size.
    """
    upper_bounds = upper_bounds or {}
    dims = []
    for d in shape:
        if isinstance(d, int):
            dims.append(d)
            continue
        if isinstance(d, tvm.tirx.IntImm):
            dims.append(int(d.value))
            continue
        free = tvm.tirx.analysis.undefined_vars(d)
        if not free or any(v.name not in upper_bounds for v in free):
            return None
        analyzer = tvm.sym.Analyzer()
        for v in free:
            analyzer.bind(v, tvm.tirx.const(upper_bounds[v.name], "int64"))
        bound = analyzer.simplify(d)
        if not isinstance(bound, tvm.tirx.IntImm):
            return None
        dims.append(int(bound.value))
    dt = tvm.DataType(dtype)
    return math.prod(dims) * ((dt.bits * dt.lanes + 7) // 8)
