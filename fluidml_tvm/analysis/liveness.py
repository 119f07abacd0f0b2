"""Lifetimes of the tensors a lowered Relax function allocates.

Reads a function after ``CallTIRRewrite`` (explicit ``R.builtin.alloc_tensor``
plus destination-passing calls) or after an arena rewrite
(``R.memory.alloc_tensor`` on a storage).  A *step* is the index of a
top-level binding; time is ``step * SLOTS + nest``, so that inside a call to a
PrimFunc an argument is live only across the loop nests that touch it.  A
tensor is live from the first time it, or any alias of it, is touched to the
last.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import tvm
from tvm import relax

from ..memory.sizes import static_nbytes
from .nests import SLOTS, param_slots

_BUILTIN_ALLOC = tvm.ir.Op.get("relax.builtin.alloc_tensor")
_MEMORY_ALLOC = tvm.ir.Op.get("relax.memory.alloc_tensor")
_ALLOC_STORAGE = tvm.ir.Op.get("relax.memory.alloc_storage")
_KILLS = {tvm.ir.Op.get("relax.memory.kill_tensor"), tvm.ir.Op.get("relax.memory.kill_storage")}
# Make a new view of their argument's memory without reading or writing it.
_VIEWS = {tvm.ir.Op.get(f"relax.{n}") for n in ("memory.ensure_zero_offset", "memory.view", "reshape")}


@dataclass(frozen=True)
class TensorAlloc:
    """One allocation site: ``R.builtin.alloc_tensor`` or ``R.memory.alloc_tensor``."""

    name: str
    step: int
    shape: tuple
    dtype: str
    device_index: int
    scope: str
    nbytes: int | None  # upper bound in bytes; None when a dimension has no bound
    storage: str | None = None  # storage var, for allocations out of a storage
    offset: int | None = None  # byte offset in that storage


@dataclass(frozen=True)
class DPSCall:
    """A destination-passing call (PrimFunc or extern function) at one step."""

    step: int
    callee: str
    args: tuple  # per argument: frozenset of the allocation names it may refer to


@dataclass
class FunctionLiveness:
    """Allocation sites, their lifetimes, and what escapes the function."""

    bindings: list
    allocs: dict = field(default_factory=dict)  # name -> TensorAlloc
    alloc_vars: dict = field(default_factory=dict)  # name -> the relax.Var bound to it
    lifetimes: dict = field(default_factory=dict)  # name -> (first, last) time, inclusive
    storages: dict = field(default_factory=dict)  # storage var name -> bytes (None if dynamic)
    escaping: set = field(default_factory=set)  # names reachable from the return value
    calls: list = field(default_factory=list)  # DPSCall, in step order
    values: dict = field(default_factory=dict)  # name -> the variable the result written there is bound to


def function_liveness(func: relax.Function, mod=None) -> FunctionLiveness:
    """Walk the top-level bindings of ``func`` and compute lifetimes.

    With ``mod``, calls to its PrimFuncs refine lifetimes to the loop nests
    that touch each argument; without it a call touches all its arguments
    for the whole step.
    """
    bindings = [b for block in func.body.blocks for b in block.bindings]
    upper = _upper_bounds(func)
    info = FunctionLiveness(bindings=bindings)
    roots: dict = {}  # relax.Var -> frozenset of allocation names it may alias
    fields: dict = {}  # a variable bound to a tuple -> the roots of each of its fields
    prim_funcs = {} if mod is None else {
        gv.name_hint: f for gv, f in mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)
    }

    def touch(names, step, slots=None):
        first, last = slots or (0, SLOTS - 1)
        lo, hi = step * SLOTS + first, step * SLOTS + last
        for n in names:
            s, e = info.lifetimes.get(n, (lo, hi))
            info.lifetimes[n] = (min(s, lo), max(e, hi))

    for step, binding in enumerate(bindings):
        var, value = binding.var, binding.value
        if isinstance(value, (relax.Var, relax.Tuple, relax.TupleGetItem)) or (
            isinstance(value, relax.Call) and value.op in _VIEWS
        ):
            # An alias touches no data; its uses count for what it aliases.
            roots[var] = _alias_roots(value, roots, _roots_of_free_vars(value, roots), fields)
            if isinstance(value, relax.Tuple):  # what each field refers to, for a later ``var[i]``
                fields[var] = tuple(_roots_of_free_vars(f, roots) for f in value.fields)
            elif isinstance(value, relax.Var) and value in fields:
                fields[var] = fields[value]
            if isinstance(value, relax.Var) and len(roots[var]) == 1:
                info.values.setdefault(next(iter(roots[var])), var.name)  # ``lv = alloc`` after a call
            continue
        if isinstance(binding, relax.MatchCast) or not isinstance(value, relax.Call):
            used = _roots_of_free_vars(value, roots)
            touch(used, step)
            roots[var] = used
            continue
        if value.op.same_as(_BUILTIN_ALLOC) or value.op.same_as(_MEMORY_ALLOC):
            name = var.name if var.name not in info.allocs else f"{var.name}#{step}"
            info.allocs[name] = _alloc_site(name, var, value, step, upper)
            info.alloc_vars[name] = var
            roots[var] = frozenset([name])
            continue
        if value.op.same_as(_ALLOC_STORAGE):
            size = value.args[0]
            info.storages[var.name] = (
                _const_int(size.values[0]) if isinstance(size, relax.ShapeExpr) else None
            )
            roots[var] = frozenset()
            continue
        if value.op in _KILLS:
            roots[var] = frozenset()
            continue
        used = _roots_of_free_vars(value, roots)
        if _returns_nothing(var):
            callee = value.op.name_hint if isinstance(value.op, relax.GlobalVar) else str(value.op)
            per_arg = tuple(_roots_of_free_vars(a, roots) for a in value.args)
            info.calls.append(DPSCall(step, callee, per_arg))
            slots = param_slots(prim_funcs[callee]) if callee in prim_funcs else ()
            for i, arg_roots in enumerate(per_arg):
                touch(arg_roots, step, slots[i] if i < len(slots) else None)
            roots[var] = frozenset()
        else:
            touch(used, step)
            # A call that returns something may return (a view of) any argument.
            roots[var] = used

    ret = func.body.body
    info.escaping = set(_roots_of_free_vars(ret, roots))
    # A returned tensor stays live after the last step.
    touch(info.escaping, len(bindings))
    for name, alloc in info.allocs.items():
        info.lifetimes.setdefault(name, (alloc.step * SLOTS, alloc.step * SLOTS + SLOTS - 1))
    return info


def _roots_of_free_vars(expr, roots) -> frozenset:
    if isinstance(expr, relax.Var):
        return roots.get(expr, frozenset())
    out = set()
    for v in relax.analysis.free_vars(expr):
        out |= roots.get(v, frozenset())
    return frozenset(out)


def _alias_roots(value, roots, used, fields) -> frozenset:
    """What a non-call binding may refer to: precise for tuple projection, of a tuple or of a variable
    bound to one (``t = (a, b); x = t[0]`` refers to ``a`` only: a kernel with several outputs)."""
    if isinstance(value, relax.TupleGetItem) and isinstance(value.tuple_value, relax.Tuple):
        return _roots_of_free_vars(value.tuple_value.fields[value.index], roots)
    if isinstance(value, relax.TupleGetItem) and value.tuple_value in fields:
        return fields[value.tuple_value][value.index]
    return used


def _returns_nothing(var) -> bool:
    ty = var.ty
    return ty is None or (isinstance(ty, relax.TupleType) and len(ty.fields) == 0)


def _alloc_site(name, var, call, step, upper) -> TensorAlloc:
    ty = var.ty
    shape = tuple(ty.shape.values) if isinstance(ty.shape, relax.ShapeExpr) else None
    dtype = str(ty.dtype)
    if call.op.same_as(_BUILTIN_ALLOC):
        device_index, scope = _const_int(call.args[2]), str(call.args[3].value)
        storage = offset = None
    else:
        device_index, scope = _const_int(call.args[4]), "global"
        storage = call.args[0].name
        offset = _const_int(call.args[1])
    nbytes = static_nbytes(shape, dtype, upper) if shape is not None else None
    return TensorAlloc(name, step, shape, dtype, device_index, scope, nbytes, storage, offset)


def _upper_bounds(func) -> dict:
    bounds = (func.attrs or {}).get("tir_var_upper_bound", {}) if func.attrs else {}
    return {str(k): int(v) for k, v in bounds.items()}


def _const_int(expr):
    return int(expr.value) if isinstance(expr, tvm.tirx.IntImm) else None
