"""Kernels that only move data (reshape, permute_dims, ...), and the neighbour each could be merged into.

After FuseOps a transformer's attention keeps standalone copy kernels: the head
split ``reshape + permute_dims`` after the Q/K/V matmuls and the head merge
before the output projection.  Each reads one tensor and writes it in another
layout.  Merged into the kernel that writes its input (``"producer"``: that
kernel stores in the new layout) or into the one kernel that reads its output
(``"consumer"``: that kernel loads through the permutation), the copy becomes
an index expression and the intermediate tensor is never stored.

A fold is only offered when the tensor between the two calls has no other
reader and is not returned: otherwise it would still have to exist; and only
into a kernel that is not scheduled yet and whose blocks declare every buffer
they touch (an opaque kernel, such as a gather's index check, hides its loads).
"""

from __future__ import annotations

import json

from dataclasses import dataclass

import tvm
from tvm import relax, tirx

from .nests import kernel_nests
from .schedule_rules import is_scheduled


# The function attribute listing the folds FoldLayoutKernels applied to a function (JSON), read by the report.
FOLDS_ATTR = "fluidml_tvm.layout_folds"


@dataclass(frozen=True)
class Fold:
    """Merge the call bound to ``layout_var`` into the call bound to ``partner_var``.

    ``kind`` is ``"producer"`` (the partner writes the layout kernel's input) or
    ``"consumer"`` (the partner is the one reader of the layout kernel's output).
    """

    kind: str
    layout_var: relax.Var
    partner_var: relax.Var



def recorded_folds(func) -> list[dict]:
    """The folds FoldLayoutKernels recorded on ``func`` (kind, copy, into, why), in order; [] when none."""
    return json.loads(str(func.attrs[FOLDS_ATTR])) if func.attrs and FOLDS_ATTR in func.attrs else []

def find_folds(mod: tvm.IRModule, func: relax.Function) -> list[Fold]:
    """Every producer and consumer fold of the layout kernels of ``func``, in binding order.

    ``func`` is a function of ``mod`` after FuseOps (calls to grouped
    ``"Primitive"`` functions and direct ``call_tir``).  A layout kernel may have
    both a producer and a consumer fold (producer first); at most one of them
    can be applied.  Only calls in the same dataflow block, with statically
    shaped tensors, are paired.
    """
    readers = _readers(func)
    returned = _returned(func)
    folds = []
    for block in func.body.blocks:
        if not isinstance(block, relax.DataflowBlock):
            continue
        bound = {b.var: b.value for b in block.bindings}
        for binding in block.bindings:
            var, call = binding.var, binding.value
            if not is_layout_kernel(mod, call) or not _static(var.ty):
                continue
            (source,) = kernel_inputs(mod, call)
            if (isinstance(source, relax.Var) and _plain_kernel(mod, bound.get(source))
                    and len(readers.get(source, ())) == 1 and source not in returned):
                folds.append(Fold("producer", var, source))
            users = readers.get(var, ())
            if len(users) == 1 and var not in returned:
                (user,) = users
                if user in bound and _plain_kernel(mod, bound[user]):
                    folds.append(Fold("consumer", var, user))
    return folds


def is_layout_kernel(mod: tvm.IRModule, call) -> bool:
    """A kernel call with one tensor input whose PrimFuncs only copy elements, returning one tensor."""
    inputs = kernel_inputs(mod, call)
    if inputs is None or len(inputs) != 1 or not isinstance(inputs[0].ty, relax.TensorType):
        return False
    if not isinstance(call.ty, relax.TensorType) or not _static(inputs[0].ty):
        return False
    kernels = kernel_primfuncs(mod, call)
    return bool(kernels) and all(is_copy(mod[gv]) for gv in kernels)


def is_copy(func: tirx.PrimFunc) -> bool:
    """Every block stores a single element load (no arithmetic, no casts) and none reduces."""
    nests = kernel_nests(func)
    if nests is None or not nests.blocks:
        return False
    for block in nests.blocks:
        if block.init is not None or any(int(iv.iter_type) != 0 for iv in block.iter_vars):
            return False
        body = block.body
        if not isinstance(body, tirx.BufferStore) or not isinstance(body.value, tvm.ir.expr.TensorLoad):
            return False
        if body.value.source.dtype != body.buffer.dtype:
            return False
    return True


def kernel_inputs(mod: tvm.IRModule, call) -> list | None:
    """The arguments of a call to a grouped ``"Primitive"`` function or of a ``call_tir``; None otherwise.

    A ``call_tir`` with symbolic-shape arguments (``tir_vars``) or a non-tuple
    argument list is not a kernel call here.
    """
    if not isinstance(call, relax.Call):
        return None
    if isinstance(call.op, relax.GlobalVar):
        callee = mod[call.op]
        if isinstance(callee, relax.Function) and is_primitive(callee):
            return list(call.args)
        return None
    if (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.call_tir" and len(call.args) == 2
            and isinstance(call.args[1], relax.Tuple) and isinstance(call.args[0], relax.GlobalVar)):
        return list(call.args[1].fields)
    return None


def kernel_primfuncs(mod: tvm.IRModule, call) -> list | None:
    """GlobalVars of the PrimFuncs a kernel call runs; None when a group binds anything but ``call_tir``."""
    if not isinstance(call.op, relax.GlobalVar):
        return [call.args[0]]
    out = []
    for block in mod[call.op].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if kernel_inputs(mod, value) is None or isinstance(value.op, relax.GlobalVar):
                return None
            out.append(value.args[0])
    return out


def is_primitive(func: relax.Function) -> bool:
    """A function FuseOps grouped (FuseTIR will merge its calls), not one offloaded to a library."""
    attrs = func.attrs or {}
    return bool(attrs.get("Primitive", False)) and "Codegen" not in attrs and "Composite" not in attrs


def _plain_kernel(mod, call) -> bool:
    """A kernel call whose tensors all have static shapes (a merge then needs no shape variables)
    and whose PrimFuncs a merge can rewrite (:func:`_open`)."""
    inputs = kernel_inputs(mod, call)
    if inputs is None or not all(_static(a.ty) for a in inputs):
        return False
    outs = call.ty.fields if isinstance(call.ty, relax.TupleType) else [call.ty]
    kernels = kernel_primfuncs(mod, call)
    return all(_static(t) for t in outs) and bool(kernels) and all(_open(mod[gv]) for gv in kernels)


def _open(func: tirx.PrimFunc) -> bool:
    """Not scheduled, and its blocks declare every buffer it has: a merge rewrites the loads and stores
    of a buffer through the blocks' reads and writes (an extern block declares none; FuseTIR then
    maps two buffers to one tensor)."""
    if is_scheduled(func):
        return False
    nests = kernel_nests(func)
    return nests is not None and all(p in nests.spans for p in func.params if isinstance(p, tirx.Buffer))


def _readers(func: relax.Function) -> dict:
    """Variable -> bound variables whose value reads it (the returned value is not counted)."""
    out: dict = {}
    for block in func.body.blocks:
        for binding in block.bindings:
            for v in relax.analysis.free_vars(binding.value):
                out.setdefault(v, []).append(binding.var)
    return out


def _returned(func: relax.Function) -> set:
    """Variables the function returns, and those its dataflow blocks expose (read after the block)."""
    out = set(relax.analysis.free_vars(func.body.body))
    for block in func.body.blocks:
        out.update(b.var for b in block.bindings if not isinstance(b.var, relax.DataflowVar)
                   and isinstance(block, relax.DataflowBlock))
    return out


def _static(ty) -> bool:
    if not isinstance(ty, relax.TensorType) or ty.shape is None or not isinstance(ty.shape, relax.ShapeExpr):
        return False
    return all(isinstance(d, tirx.IntImm) for d in ty.shape.values)
