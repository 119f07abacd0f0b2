"""Which stage of TVM's Relax pipeline a function is in, and clear errors when it is the wrong one."""

from __future__ import annotations

import functools

import tvm
import tvm_ffi
from tvm import relax

_DPS_CALLS = frozenset({"relax.call_tir", "relax.call_tir_inplace", "relax.call_dps_packed"})
# Still present, by design, after TVM's lowering passes.
_KEPT_AFTER_LEGALIZE = frozenset({"relax.reshape"})


@tvm_ffi.register_error
class PipelinePlacementError(RuntimeError):
    """A FluidML pass was placed where its input form is not available."""


@functools.lru_cache(maxsize=64)
def ops_in(func: relax.Function) -> dict:
    """Names of the operators ``func`` calls (as dict keys, in first-seen order)."""
    found: dict = {}

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            found.setdefault(expr.op.name, None)

    relax.analysis.post_order_visit(func, visit)
    return found


def unlegalized_ops(func) -> list[str]:
    """High-level operators that LegalizeOps would still lower to TIR."""
    out = []
    for name in ops_in(func):
        if name in _KEPT_AFTER_LEGALIZE:
            continue
        op = tvm.ir.Op.get(name)
        if op.get_attr("FLegalize") is not None:
            out.append(name)
    return sorted(out)


def is_dataflow_form(func) -> bool:
    return any(name in _DPS_CALLS for name in ops_in(func))


def has_planned_storage(func) -> bool:
    return "relax.memory.alloc_storage" in ops_in(func)


def require_legalized(func, name: str, pass_name: str) -> None:
    ops = unlegalized_ops(func)
    if ops:
        raise PipelinePlacementError(
            f"{pass_name} needs a legalized, fused module, but function '{name}' still calls "
            f"{', '.join(ops[:5])}. Insert it after LegalizeOps/FuseOps/FuseTIR and before "
            "StaticPlanBlockMemory, or use fluidml_tvm.get_pipeline(target)."
        )


def require_lowered(func, name: str, pass_name: str) -> None:
    require_legalized(func, name, pass_name)
    if is_dataflow_form(func):
        raise PipelinePlacementError(
            f"{pass_name} runs on destination-passing form (after CallTIRRewrite), but function "
            f"'{name}' still has R.call_tir. Use fluidml_tvm.transform.FluidMLPlan(target), which lowers "
            "first, or place the pass after CallTIRRewrite."
        )
    require_unplanned(func, name, pass_name)


def require_unplanned(func, name: str, pass_name: str) -> None:
    if has_planned_storage(func):
        raise PipelinePlacementError(
            f"{pass_name} must run before StaticPlanBlockMemory, but function '{name}' already "
            "has R.memory.alloc_storage: TVM's planner has run. Insert it after FuseTIR."
        )
