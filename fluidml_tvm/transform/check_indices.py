"""CheckIndices: every gather checks its indices in the compiled code and raises, never reads out of bounds."""

from __future__ import annotations

from dataclasses import replace

import tvm
from tvm import relax

from ..analysis.gather_indices import gather_sites
from ..rewrite.check_indices import checked_gather, constant_indices, emit_checked_indices, emit_clamped_indices
from ..targets import describe


@tvm.transform.module_pass(opt_level=0, name="fluidml_tvm.CheckIndices")
class CheckIndices:
    """Route the indices of every ``R.take`` (``fast`` mode), ``R.gather_elements``,
    ``R.gather_nd``, ``R.scatter_elements`` and ``R.scatter_nd`` through a small
    kernel that asserts each index is in range.

    Negative indices are wrapped as ONNX defines them where TVM's ONNX importer
    had wrapped them (its wrap is replaced, not repeated) or the op wraps them itself
    (scatter_elements); any other index outside
    the axis makes the VM call raise ``IndexError`` naming the op (the ONNX node,
    when imported through :func:`fluidml_tvm.frontend.onnx_to_relax`) and where the
    indices come from (a graph input, or the op that computed them).
    ``R.take`` is then legalized in ``clip`` mode, so TVM's "fast mode" is never
    built. Place it on the high-level module, before LegalizeOps.

    Only CPU builds raise. On a GPU ``target`` (OpenCL: device code cannot raise,
    and the serial check kernel cannot run there) every index is wrapped as above
    and clamped into ``[0, n)`` by an elementwise kernel instead: an out-of-range
    index reads or writes the nearest valid element, never foreign memory.
    """

    def __init__(self, target):
        self.target = describe(target)

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        out = mod
        for gv, func in mod.functions.items():
            if not isinstance(func, relax.Function):
                continue
            sites = gather_sites(out, func)
            if sites:
                rewriter = _Rewriter(out, sites, self.target.cpu)
                out = rewriter.rewrite(gv, func)
        return out if out is mod else relax.transform.DeadCodeElimination()(out)


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def __init__(self, mod, sites, cpu: bool):
        super().__init__(mod)
        self.sites = sites
        self.cpu = cpu  # a CPU build raises on a bad index; a GPU build clamps it

    def rewrite(self, gv, func) -> tvm.IRModule:
        self.builder_.update_func(gv, self.visit_expr(func))
        return self.builder_.get()

    def visit_var_binding_(self, binding):
        site = self.sites.get(binding.var)
        if site is None:
            return super().visit_var_binding_(binding)
        call = self.visit_expr(binding.value)
        site = _renamed(site, self)
        checked = constant_indices(site, clamp=not self.cpu)
        if checked is None:
            emit = emit_checked_indices if self.cpu else emit_clamped_indices
            checked = emit(self.builder_, site)
        new = self.builder_.normalize(checked_gather(call, checked))
        is_output = self.builder_.current_block_is_dataflow() and not isinstance(binding.var, relax.DataflowVar)
        emit = self.builder_.emit_output if is_output else self.builder_.emit
        self.set_var_remap(binding.var, emit(new, binding.var.name))


def _renamed(site, mutator):
    """``site`` with its indices in the rewritten function's variables."""
    return replace(site, indices=mutator.visit_expr(site.indices))
