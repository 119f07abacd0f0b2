"""Where a gather's indices come from, what range they must lie in, and how to name them in an error.

A gather (``R.take`` in TVM's unchecked ``fast`` mode, ``R.gather_elements``,
``R.gather_nd``) reads ``data`` at positions its indices give, and a scatter
(``R.scatter_elements``, ``R.scatter_nd``) writes there, with no bounds check:
an index outside the axis reads or writes foreign memory, or segfaults.
TVM's ONNX importer maps negative indices onto ``[0, n)`` first, as
``where(less(x, 0), add(x, n), x)``; a :class:`GatherSite` records that
normalization when it is recognizably the importer's (``n`` read from the
shape of ``data`` at the gathered axis), so a check can take ``x`` itself, in
ONNX's range ``[-n, n-1]``, without normalizing twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import relax, tirx
from tvm.relax.dpl import is_const, is_op, wildcard

from ..frontend.onnx_labels import GATHER_OPS, onnx_label

# Ops that wrap negative indices themselves (TVM's scatter_elements, as ONNX defines it): always [-n, n-1].
_WRAPS_ITSELF = ("relax.scatter_elements",)
# PrimFunc attribute of the kernel that checks a gather's indices (fluidml_tvm.rewrite.check_indices).
CHECK_ATTR = "fluidml_tvm.checked_indices"
# Ops that pass their input's values through unchanged (the indices' name is the input's).
_VALUE_PRESERVING = ("relax.reshape", "relax.astype", "relax.squeeze", "relax.expand_dims",
                     "relax.flatten", "relax.permute_dims")


@dataclass(frozen=True)
class GatherSite:
    """One gather call and what a check of its indices needs."""

    op: str  # "relax.take", ...
    indices: relax.Expr  # the indices to check (before the importer's normalization when wrap_negative)
    extents: tuple  # valid extent per index coordinate: one for take/gather_elements, k for gather_nd
    wrap_negative: bool  # [-n, n-1], negatives wrapped (ONNX); else [0, n-1]
    label: str  # "Gather node '/emb/Gather'" or "R.take"
    source: str  # "graph input 'input_ids'", "tensor 'lv3' computed by R.argmax"


def gather_sites(mod: tvm.IRModule, func: relax.Function) -> dict:
    """``{binding var: GatherSite}`` for every unchecked gather bound in ``func`` (a function of ``mod``)."""
    var2val = relax.analysis.get_var2val(func)
    params = {p for p in func.params}
    sites = {}
    for var, value in var2val.items():
        if not isinstance(value, relax.Call) or not isinstance(value.op, tvm.ir.Op):
            continue
        name = value.op.name
        if name not in GATHER_OPS or (name == "relax.take" and value.attrs.mode != "fast"):
            continue
        data, indices = value.args[0], value.args[1]
        if not _static_rank(data) or not _static_rank(indices) or _is_checked(mod, indices, var2val):
            continue
        extents = _extents(value)
        raw = _importer_normalized(value, var2val)
        checked = raw if raw is not None else indices
        wrap = raw is not None or name in _WRAPS_ITSELF
        label, onnx_indices = onnx_label(value)
        sites[var] = GatherSite(name, checked, extents, wrap, label or _op_label(name),
                                describe_source(checked, var2val, params, onnx_indices))
    return sites


def describe_source(indices: relax.Expr, var2val, params, onnx_name: str | None = None) -> str:
    """What the indices are, in words: a graph input, a constant, or a tensor some op computed.

    ``onnx_name``: the ONNX tensor the indices are, which names a computed tensor better than its Relax variable.
    """
    expr = indices
    through = []
    while isinstance(expr, relax.Var) and expr in var2val:
        value = var2val[expr]
        if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name in _VALUE_PRESERVING:
            through.append(_op_label(value.op.name))
            expr = value.args[0]
            continue
        break
    via = f" (through {', '.join(through)})" if through else ""
    if isinstance(expr, relax.Var) and expr in params:
        return f"graph input '{expr.name}'{via}"
    if isinstance(expr, tvm.ir.GenericConst):
        return f"a constant{via}"
    if isinstance(expr, relax.Var) and expr in var2val:
        value = var2val[expr]
        if isinstance(value, relax.Call):
            producer = (_op_label(value.op.name) if isinstance(value.op, tvm.ir.Op)
                        else getattr(value.op, "name_hint", None) or str(value.op))
            tensor = onnx_name if onnx_name and not through else expr.name
            return f"tensor '{tensor}' computed by {producer}{via}"
    name = expr.name if isinstance(expr, relax.Var) else type(expr).__name__
    return f"tensor '{name}'{via}"


def _is_checked(mod, indices, var2val) -> bool:
    """``indices`` are the output of a check kernel already (the pass ran before)."""
    value = _deref(indices, var2val)
    if not (isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name == "relax.call_tir"):
        return False
    callee = value.args[0]
    func = mod[callee] if isinstance(callee, relax.GlobalVar) and callee in mod.functions else None
    return func is not None and func.attrs is not None and CHECK_ATTR in func.attrs


def _op_label(name: str) -> str:
    return "R." + name.split(".", 1)[1]


def _static_rank(expr) -> bool:
    ty = expr.ty
    return isinstance(ty, relax.TensorType) and ty.ndim >= 0 and ty.shape is not None


def _extents(call: relax.Call) -> tuple:
    """Per index coordinate, the extent of the data axis it indexes."""
    data_shape = list(call.args[0].ty.shape)
    name = call.op.name
    if name in ("relax.gather_nd", "relax.scatter_nd"):
        batch = int(call.attrs.batch_dims) if name == "relax.gather_nd" else 0
        coords = int(call.args[1].ty.shape[-1])
        return tuple(data_shape[batch:batch + coords])
    axis = int(call.attrs.axis) if call.attrs.axis is not None else 0
    return (data_shape[axis % len(data_shape)],)


def _normalization_pattern():
    """``where(less(x, 0), add(x, extent), x)``: TVM's ONNX importer's wrap of negative indices."""
    x = wildcard()
    zero = is_const()
    extent = wildcard()
    pattern = is_op("relax.where")(is_op("relax.less")(x, zero), is_op("relax.add")(x, extent), x)
    return pattern, x, zero, extent


def _importer_normalized(call: relax.Call, var2val) -> relax.Expr | None:
    """The indices before the importer's negative-index wrap, when the wrap adds exactly the data's extents."""
    indices = call.args[1]
    value = var2val.get(indices) if isinstance(indices, relax.Var) else None
    if value is None:
        return None
    pattern, x, zero, extent = _normalization_pattern()
    matched = pattern.extract_matched_expr(value, var2val)
    if matched is None or matched[zero].value.numpy().size != 1 or int(matched[zero].value.numpy()) != 0:
        return None
    shape_source = _extent_shape_source(call, matched[extent], var2val)
    if shape_source is None or not _same_shape(shape_source, call.args[0], var2val):
        return None
    # x as bound (the match holds x's bound value); the matcher binds all three x to one expression
    return value.args[2]


def _extent_shape_source(call, extent, var2val):
    """The shape the importer read ``extent`` from, when it is the gathered axis (or coordinate axes)."""
    expr = _deref(extent, var2val)
    if isinstance(expr, relax.Call) and expr.op.name == "relax.astype":
        expr = _deref(expr.args[0], var2val)
    if not isinstance(expr, relax.Call):
        return None
    if call.op.name in ("relax.gather_nd", "relax.scatter_nd"):
        if expr.op.name != "relax.strided_slice":
            return None
        batch = int(call.attrs.batch_dims) if call.op.name == "relax.gather_nd" else 0
        coords = int(call.args[1].ty.shape[-1])
        axes, begin, end = (_ints(a) for a in expr.args[1:4])
        if axes != [0] or begin != [batch] or end != [batch + coords] or len(expr.args) > 4:
            return None
    else:
        if expr.op.name != "relax.take" or not isinstance(expr.args[1], tvm.ir.GenericConst):
            return None
        rank = call.args[0].ty.ndim
        axis = int(call.attrs.axis) if call.attrs.axis is not None else 0
        if int(expr.args[1].value.numpy()) % rank != axis % rank:
            return None
    tensor = _deref(expr.args[0], var2val)
    if not (isinstance(tensor, relax.Call) and tensor.op.name == "relax.shape_to_tensor"):
        return None
    return _deref(tensor.args[0], var2val)


def _same_shape(shape_source, data, var2val) -> bool:
    """``shape_source`` is ``shape_of(data)`` or the very shape ``data`` has."""
    if isinstance(shape_source, relax.Call) and shape_source.op.name == "relax.shape_of":
        return shape_source.args[0].same_as(data) or _deref(shape_source.args[0], var2val).same_as(_deref(data, var2val))
    if isinstance(shape_source, relax.ShapeExpr):
        return _ints(shape_source) is not None and _ints(shape_source) == _ints_of(data.ty.shape)
    return False


def _deref(expr, var2val):
    while isinstance(expr, relax.Var) and expr in var2val:
        expr = var2val[expr]
    return expr


def _ints(expr):
    values = getattr(expr, "values", None) if not isinstance(expr, relax.Tuple) else expr.fields
    if values is None:
        return None
    out = []
    for v in values:
        if not isinstance(v, tirx.IntImm):
            return None
        out.append(int(v))
    return out


def _ints_of(shape):
    return [int(d) for d in shape] if all(isinstance(d, tirx.IntImm) for d in shape) else None
