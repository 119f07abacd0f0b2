"""Prove a planned function safe, reading only its final IR.

Independent of the planner: it recomputes lifetimes from the IR and checks
that every tensor fits its storage at an aligned offset, and that no two
tensors live at the same step share a byte, except a pointwise kernel's output
written over the input it reads for the last time.
"""

from __future__ import annotations

import tvm_ffi
from tvm import relax, tirx

from ..memory.plan import Interval, sharing_pairs
from ..memory.sizes import ALIGNMENT
from .liveness import function_liveness
from .nests import SLOTS
from .pointwise import inplace_pairs


@tvm_ffi.register_error
class MemoryPlanError(RuntimeError):
    """A memory plan that could corrupt data."""


def validate_function(mod, func: relax.Function, name: str = "main") -> int:
    """Raise MemoryPlanError on any violation; return the number of tensors checked."""
    live = function_liveness(func, mod)
    errors = []
    placed = [a for a in live.allocs.values() if a.storage is not None]
    for a in placed:
        size = live.storages.get(a.storage)
        if a.offset is None or a.nbytes is None or size is None:
            errors.append(f"{a.name}: offset, size or storage size is not static")
            continue
        if a.offset % ALIGNMENT:
            errors.append(f"{a.name}: offset {a.offset} is not {ALIGNMENT}-byte aligned")
        if a.offset + a.nbytes > size:
            errors.append(f"{a.name}: [{a.offset}, {a.offset + a.nbytes}) exceeds {a.storage} of {size} bytes")
    prim_funcs = {gv.name_hint: f for gv, f in mod.functions.items() if isinstance(f, tirx.PrimFunc)}
    calls = {c.step: c for c in live.calls}
    static = [(Interval(a.name, a.nbytes, *live.lifetimes[a.name]), a.storage, a.offset)
              for a in placed if a.offset is not None and a.nbytes is not None]
    allocs = live.allocs
    for (ia, _, oa), (ib, _, ob) in sharing_pairs(static):
        if not _legal_inplace(allocs[ia.name], allocs[ib.name], live, calls, prim_funcs):
            errors.append(f"{ia.name} [{oa}, {oa + ia.nbytes}) live {ia.start}..{ia.end} overlaps "
                          f"{ib.name} [{ob}, {ob + ib.nbytes}) live {ib.start}..{ib.end}")
    if errors:
        raise MemoryPlanError(f"invalid memory plan in {name}:\n  " + "\n  ".join(errors[:20]))
    return len(placed)


def _legal_inplace(a, b, live, calls, prim_funcs) -> bool:
    """Overlap allowed only as an exact in-place write in the nest where one dies and the other is born."""
    if (a.offset, a.nbytes) != (b.offset, b.nbytes):
        return False
    for src, dst in ((a, b), (b, a)):
        end, first = live.lifetimes[src.name][1], live.lifetimes[dst.name][0]
        call = calls.get(end // SLOTS)
        if end != first or call is None or call.callee not in prim_funcs:
            continue
        for i, o in inplace_pairs(prim_funcs[call.callee]):
            if call.args[i] == frozenset([src.name]) and call.args[o] == frozenset([dst.name]):
                return True
    return False
