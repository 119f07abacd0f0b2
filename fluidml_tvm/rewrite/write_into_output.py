"""Let a producer write straight into the returned tensor instead of copying into it."""

from __future__ import annotations

from tvm import relax


def write_into_outputs(func: relax.Function, liveness, copies) -> relax.Function:
    """For each copy: allocate the output where the source was, bind the source as a
    reshape view of it, and drop the copy call."""
    if not copies:
        return func
    views = {}
    dropped = set()
    for c in copies:
        src_var, dst_var = liveness.alloc_vars[c.source], liveness.alloc_vars[c.output]
        dst_binding = liveness.bindings[liveness.allocs[c.output].step]
        views[src_var] = (dst_var, dst_binding.value)
        dropped |= {dst_var, liveness.bindings[c.step].var}
    return _Rewriter(views, dropped).visit_expr(func)


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def __init__(self, views, dropped):
        super().__init__()
        self.views = views
        self.dropped = dropped

    def visit_var_binding_(self, binding):
        if binding.var in self.dropped:
            return
        view = self.views.get(binding.var)
        if view is None:
            return super().visit_var_binding_(binding)
        dst_var, dst_alloc = view
        self.builder_.emit_normalized(relax.VarBinding(dst_var, dst_alloc))
        shape = binding.var.ty.shape
        self.builder_.emit_normalized(
            relax.VarBinding(binding.var, self.builder_.normalize(relax.op.reshape(dst_var, shape)))
        )
