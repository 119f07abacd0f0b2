"""Merge layout-kernel calls into their producer or consumer: one grouped function, one kernel after FuseTIR."""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import relax

from ..analysis.layout_kernels import Fold, kernel_inputs


def fold_layout_kernels(mod: tvm.IRModule, gv: tvm.ir.GlobalVar, folds: list[Fold]) -> tvm.IRModule:
    """Return ``mod`` with the calls of each fold of ``mod[gv]`` replaced by one call to a merged function.

    Folds sharing a call (two layout kernels folded into one consumer, a chain)
    are merged into a single function.  The merged function is a
    ``"Primitive"`` group named ``fused_<a>_<b>`` like FuseOps' own, whose body
    is its members' bodies in binding order, so FuseTIR turns it into one
    PrimFunc.  Functions no longer called are dropped.
    """
    if not folds:
        return mod
    func = mod[gv]
    groups = fold_groups(func, folds)
    mutator = _MergeCalls(mod, groups)
    new_func = mutator.visit_expr(func)
    mutator.builder_.update_func(gv, new_func)
    return _drop_uncalled(mutator.builder_.get())


def fold_groups(func: relax.Function, folds: list[Fold]) -> dict:
    """The calls ``folds`` merge, as last member's binding var -> all member bindings in binding order."""
    parent: dict = {}  # union-find over binding vars (TVM objects hash and compare by handle)

    def find(v):
        while not parent.setdefault(v, v).same_as(v):
            v = parent[v]
        return v

    for fold in folds:
        a, b = find(fold.layout_var), find(fold.partner_var)
        parent[a] = b
    members: dict = {}
    for block in func.body.blocks:
        for binding in block.bindings:
            if binding.var in parent:
                members.setdefault(find(binding.var), []).append(binding)
    return {bindings[-1].var: bindings for bindings in members.values()}


def merged_function(mod: tvm.IRModule, bindings: list) -> tuple[relax.Function, str, list]:
    """``(function, name, call arguments)`` computing the bindings' last value from their outside inputs.

    Every binding but the last must be read only by later bindings of the list
    (what :func:`fluidml_tvm.analysis.layout_kernels.find_folds` checks).
    """
    inside = {b.var for b in bindings}
    args: list = []
    for b in bindings:
        for a in kernel_inputs(mod, b.value):
            if a not in inside and not any(a.same_as(x) for x in args):
                args.append(a)
    params = [relax.Var(a.name if isinstance(a, relax.Var) else f"param_{i}", a.ty) for i, a in enumerate(args)]
    name = "fused_" + "_".join(_kernel_name(b.value) for b in bindings)
    bb = relax.BlockBuilder()  # a module of its own: the name is never taken there
    with bb.function(name, params, attrs={"Primitive": True}, private=True):
        with bb.dataflow():
            env = {a: p for a, p in zip(args, params)}
            for b in bindings:
                inner = [env[a] for a in kernel_inputs(mod, b.value)]
                env[b.var] = _inline(mod, b.value, inner, bb)
            out = bb.emit_output(env[bindings[-1].var])
        bb.emit_func_output(out)
    return bb.get()[name], name, args


def merged_kernel(mod: tvm.IRModule, bindings: list):
    """The PrimFunc FuseTIR makes of :func:`merged_function` of ``bindings`` (to ask a schedule rule about it)."""
    func, name, args = merged_function(mod, bindings)
    bb = relax.BlockBuilder(tvm.IRModule({gv: f for gv, f in mod.functions.items()
                                          if isinstance(f, tvm.tirx.PrimFunc)}))
    gv = bb.add_func(func, name)
    params = [relax.Var(f"x{i}", a.ty) for i, a in enumerate(args)]
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(relax.Call(gv, params))
        bb.emit_func_output(out)
    fused = relax.transform.FuseTIR()(bb.get())
    return next(f for g, f in fused.functions.items() if isinstance(f, tvm.tirx.PrimFunc)
                and g.name_hint == gv.name_hint)


def _inline(mod, call, args, bb):
    """Emit the body of the kernel ``call`` with ``args`` for its inputs; return the value it computes."""
    if not isinstance(call.op, relax.GlobalVar):  # a direct call_tir
        return bb.emit(relax.Call(call.op, [call.args[0], relax.Tuple(args)], call.attrs, call.ty_args))
    callee = mod[call.op]
    sub = _Substitute(dict(zip(callee.params, args)))
    for block in callee.body.blocks:
        for binding in block.bindings:
            sub.env[binding.var] = bb.emit(sub.visit_expr(binding.value), binding.var.name)
    return sub.visit_expr(callee.body.body)


def _kernel_name(call) -> str:
    """FuseOps' name for a group without ``fused_``, or a ``call_tir``'s PrimFunc name."""
    gv = call.op if isinstance(call.op, relax.GlobalVar) else call.args[0]
    return gv.name_hint.removeprefix("fused_")


def _drop_uncalled(mod: tvm.IRModule) -> tvm.IRModule:
    """``mod`` without the functions no public function reaches any more."""
    roots = [gv for gv, f in mod.functions.items() if f.attrs and "global_symbol" in f.attrs]
    if not roots:
        return mod
    seen = set()
    todo = list(roots)
    while todo:
        gv = todo.pop()
        if gv.name_hint in seen:
            continue
        seen.add(gv.name_hint)
        func = mod[gv]
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(
                func, lambda e: todo.append(e) if isinstance(e, relax.GlobalVar) else None)
    if len(seen) == len(mod.functions):
        return mod
    return tvm.IRModule({gv: f for gv, f in mod.functions.items() if gv.name_hint in seen}, mod.attrs)


@relax.expr_functor.mutator
class _Substitute(relax.PyExprMutator):
    """Replace the variables of ``env`` (a callee's parameters and bindings) by the caller's."""

    def __init__(self, env):
        super().__init__()
        self.env = env

    def visit_var_(self, var):
        return self.env.get(var, var)

    def visit_dataflow_var_(self, var):
        return self.env.get(var, var)


@relax.expr_functor.mutator
class _MergeCalls(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, groups: dict):
        super().__init__(mod)
        self.mod = mod
        self.groups = groups
        self.dropped = {b.var for bindings in groups.values() for b in bindings[:-1]}
        self.added: dict = {}  # structural key -> GlobalVar of a merged function already added

    def visit_var_binding_(self, binding):
        if binding.var in self.dropped:
            return  # computed inside the merged call of its group
        bindings = self.groups.get(binding.var)
        if bindings is None:
            super().visit_var_binding_(binding)
            return
        merged, name, args = merged_function(self.mod, bindings)
        gv = self._add(merged, name)
        call = relax.Call(gv, [self.visit_expr(a) for a in args])
        self.builder_.emit_normalized(relax.VarBinding(binding.var, self.builder_.normalize(call)))

    def _add(self, func, name):
        # every layer of a transformer merges the same pair: one function serves them all
        for key, gv in self.added.items():
            if tvm_ffi.structural_equal(key, func):
                return gv
        gv = self.builder_.add_func(func, name)
        self.added[func] = gv
        return gv
