"""Turn a kernel's scratch buffers into parameters its Relax caller allocates."""

from __future__ import annotations

from tvm import relax, s_tir, tirx


def with_scratch_params(func: tirx.PrimFunc, buffers) -> tirx.PrimFunc:
    """``func`` taking ``buffers`` (root-block allocations) as trailing parameters."""
    realize = func.body
    root = realize.block
    keep = [b for b in root.alloc_buffers if not any(b.same_as(x) for x in buffers)]
    block = s_tir.stmt.SBlock(root.iter_vars, root.reads, root.writes, root.name_hint, root.body,
                              root.init, keep, root.match_buffers, root.annotations)
    body = s_tir.stmt.SBlockRealize(realize.iter_values, realize.predicate, block)
    return tirx.PrimFunc(list(func.params) + list(buffers), body, func.ret_type, func.attrs)


def pass_scratch_at_calls(func: relax.Function, callees: dict) -> relax.Function:
    """Allocate the buffers of ``callees[name] = (new GlobalVar, buffers)`` before each call."""
    return _CallSiteRewriter(callees).visit_expr(func)


@relax.expr_functor.mutator
class _CallSiteRewriter(relax.PyExprMutator):
    def __init__(self, callees):
        super().__init__()
        self.callees = callees

    def visit_var_binding_(self, binding):
        value = binding.value
        callee = None
        if isinstance(value, relax.Call) and isinstance(value.op, relax.GlobalVar):
            callee = self.callees.get(value.op.name_hint)
        if callee is None:
            return super().visit_var_binding_(binding)
        new_gv, buffers = callee
        extra = []
        for buf in buffers:
            shape = relax.ShapeExpr([int(d) for d in buf.ty.shape])
            alloc = relax.op.builtin.alloc_tensor(shape, str(buf.ty.dtype), 0, "global")
            extra.append(self.builder_.emit(alloc, f"scratch_{buf.name}"))
        call = relax.Call(new_gv, list(value.args) + extra, value.attrs, value.ty_args)
        self.builder_.emit_normalized(relax.VarBinding(binding.var, self.builder_.normalize(call)))
