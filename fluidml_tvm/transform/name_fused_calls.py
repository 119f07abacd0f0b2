"""NameFusedCalls: FuseOps that keeps the ONNX node names of the values it fuses."""

from __future__ import annotations

import tvm
from tvm import relax

from ..frontend.onnx_labels import is_generated, rename_bindings


@tvm.transform.module_pass(opt_level=0, name="fluidml_tvm.NameFusedCalls")
class NameFusedCalls:
    """Run ``fuse`` (TVM's FuseOps) and name each fused call after the value it computes.

    FuseOps binds a fused call to a generated variable, which loses the ONNX
    node name the importer gave the group's output; and since identical groups
    share one function, the names inside it belong to one of them only. The
    call is matched back to the value it replaces: its arguments are known
    values, and each binding of the fused function is the unfused binding
    with the same kernel and the same arguments. The report and the profile
    then name tensors and kernels by node; the computation is unchanged.
    """

    def __init__(self, fuse: tvm.transform.Pass | None = None):
        self.fuse = fuse or relax.transform.FuseOps()

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        fused = self.fuse(mod)
        names = {}  # the variable of a fused call -> the name of the value it computes
        for gv, func in fused.functions.items():
            if isinstance(func, relax.Function) and gv in mod.functions and not _primitive(func):
                names.update(_fused_call_names(fused, func, mod[gv]))
        return rename_bindings(fused, lambda binding: names.get(binding.var))


def _primitive(func) -> bool:
    return bool(func.attrs and "Primitive" in func.attrs)


def _fused_call_names(fused: tvm.IRModule, func: relax.Function, before: relax.Function) -> dict:
    by_key = {}  # (callee, arguments) -> the unfused variable bound to that call
    for b in _bindings(before):
        key = _key(b.value, lambda e: e)
        if key is not None:
            by_key.setdefault(key, b.var)
    original = {p: p for p in func.params}  # value after fusion -> the unfused variable it stands for
    names = {}
    for b in _bindings(func):
        value = b.value
        callee = fused.functions.get(value.op) if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.GlobalVar) else None
        if callee is None or not _primitive(callee):
            var = by_key.get(_key(value, lambda e: original.get(e, e)))
            original[b.var] = var if var is not None else b.var
            continue
        inner = dict(zip(callee.params, (original.get(a, a) for a in value.args)))
        matched = []
        for ib in _bindings(callee):
            var = by_key.get(_key(ib.value, lambda e: inner.get(e, e)))
            if var is None:
                break
            inner[ib.var] = var
            matched.append(var)
        if matched and inner.get(callee.body.body) is matched[-1]:
            original[b.var] = matched[-1]
            # an unnamed ONNX node (e.g. the transpose after a named reshape): the group's last named one
            named = [v.name for v in matched if not is_generated(v.name)]
            if named:
                names[b.var] = named[-1]
    return names


def _key(value, resolve):
    """``(callee, arguments)`` of a call (or a tuple item), each argument ``resolve``d (TVM objects compare
    by identity)."""
    if isinstance(value, relax.TupleGetItem):
        return ("item", resolve(value.tuple_value), value.index)
    if not isinstance(value, relax.Call):
        return None
    args = []
    for a in value.args:
        fields = a.fields if isinstance(a, relax.Tuple) else [a]  # call_tir's argument tuple
        args += [resolve(f) if isinstance(f, (relax.Var, tvm.ir.expr.Constant)) else _shape_key(f) for f in fields]
    return (value.op, tuple(args))


def _shape_key(expr):
    # GlobalVars compare by identity; shapes, primitive values and attributes by their text
    return expr if isinstance(expr, tvm.ir.GlobalVar) else str(expr)


def _bindings(func) -> list:
    return [b for block in func.body.blocks for b in block.bindings]
