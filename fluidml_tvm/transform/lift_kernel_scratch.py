"""LiftKernelScratch: kernel scratch buffers become tensors the memory plan can place."""

from __future__ import annotations

import tvm
from tvm import relax, tirx

from ..analysis.scratch import liftable_scratch
from ..rewrite.lift_scratch import pass_scratch_at_calls, with_scratch_params


@tvm.transform.module_pass(opt_level=0, name="fluidml_tvm.LiftKernelScratch")
class LiftKernelScratch:
    """Pass every fully materialized scratch buffer of a kernel in from its caller.

    TVM allocates such buffers on each call from a workspace pool that keeps
    them; as caller tensors with one-step lifetimes they share the arena.
    Runs on destination-passing form (after CallTIRRewrite), before PlanMemory.
    """

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        called = set()
        for func in mod.functions.values():
            if isinstance(func, relax.Function):
                relax.analysis.post_order_visit(func, lambda e: called.add(e.op.name_hint) if (
                    isinstance(e, relax.Call) and isinstance(e.op, relax.GlobalVar)) else None)
        scratch = {}
        for gv, func in mod.functions.items():
            if isinstance(func, tirx.PrimFunc) and gv.name_hint in called:
                buffers = liftable_scratch(func)
                if buffers:
                    scratch[gv.name_hint] = (gv, buffers)
        if not scratch:
            return mod
        # New GlobalVars: a callee's type (its parameters) is part of its GlobalVar.
        funcs = {gv: f for gv, f in mod.functions.items() if gv.name_hint not in scratch}
        builder = relax.BlockBuilder(tvm.IRModule(funcs, mod.attrs, mod.global_infos))
        callees = {}
        for name, (gv, buffers) in scratch.items():
            new_gv = builder.add_func(with_scratch_params(mod[gv], buffers), name)
            callees[name] = (new_gv, buffers)
        for gv, func in funcs.items():
            if isinstance(func, relax.Function):
                builder.update_func(gv, pass_scratch_at_calls(func, callees))
        return builder.get()
