"""Decide where every intermediate tensor of a lowered Relax function lives."""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field

from ..memory.plan import Interval, StorageSpec, live_set_peak
from ..memory.planners import best_arena, get_planner, shared_buffers
from ..memory.sizes import align
from .inplace import inplace_merges
from .liveness import function_liveness

# The function attribute PlanMemory stores each plan in (as JSON), read by the report.
PLAN_ATTR = "fluidml_tvm.memory_plan"


@dataclass(frozen=True)
class PlannedTensor:
    """A tensor's place; ``start``/``end`` in kernel time (step * SLOTS + nest)."""

    name: str
    nbytes: int
    start: int
    end: int
    buffer: str  # the buffer it shares (itself unless written in place over another)
    storage: int
    offset: int


@dataclass
class FunctionMemoryPlan:
    """A function's memory plan, and the figures that judge it."""

    function: str
    tensors: list = field(default_factory=list)  # PlannedTensor
    storages: list = field(default_factory=list)  # StorageSpec
    strategy: str = ""
    inplace: list = field(default_factory=list)  # (input, output) pairs sharing memory
    unplanned: dict = field(default_factory=dict)  # name -> reason left to TVM
    live_set_lower_bound: int = 0  # largest live total over this order, before in-place
    no_reuse_bytes: int = 0
    proved_bound: int = 0  # no placement of these buffers (in-place pairs included) needs fewer bytes

    @property
    def arena_bytes(self) -> int:
        return sum(s.nbytes for s in self.storages)

    @property
    def status(self) -> str:
        """``optimal`` (proved, for this order and these lifetimes) or how far above the bound."""
        return plan_status(self.arena_bytes, self.proved_bound)

    def placements(self, liveness) -> dict:
        """``relax.Var -> (storage, offset)`` for the arena rewrite."""
        return {liveness.alloc_vars[t.name]: (t.storage, t.offset) for t in self.tensors}

    def to_json(self) -> dict:
        """The plan as JSON-able data, with its derived figures (arena bytes, status) for readers."""
        return {**asdict(self), "inplace": [list(p) for p in self.inplace],
                "arena_bytes": self.arena_bytes, "status": self.status}

    @classmethod
    def from_json(cls, data: dict) -> "FunctionMemoryPlan":
        return cls(function=data["function"], tensors=[PlannedTensor(**t) for t in data["tensors"]],
                   storages=[StorageSpec(**s) for s in data["storages"]], strategy=data["strategy"],
                   inplace=[tuple(p) for p in data["inplace"]], unplanned=data["unplanned"],
                   live_set_lower_bound=data["live_set_lower_bound"], no_reuse_bytes=data["no_reuse_bytes"],
                   proved_bound=data["proved_bound"])


def recorded_plan(func) -> FunctionMemoryPlan | None:
    """The plan PlanMemory recorded on ``func`` (None if it planned none)."""
    if func.attrs is None or PLAN_ATTR not in func.attrs:
        return None
    return FunctionMemoryPlan.from_json(json.loads(str(func.attrs[PLAN_ATTR])))


def record_plan(func, plan: FunctionMemoryPlan):
    """``func`` with ``plan`` recorded as its PLAN_ATTR attribute."""
    return func.with_attr(PLAN_ATTR, json.dumps(plan.to_json()))


def plan_status(arena_bytes: int, bound: int) -> str:
    if arena_bytes <= bound:
        return "optimal"
    return f"within {100 * (arena_bytes / bound - 1):.1f}% of the bound"


def plan_function(mod, func, name: str, *, planner: str = "best", inplace: bool = True,
                  offsets: bool = True, solve_seconds: float = 0.0):
    """Plan ``func``: lifetimes, in-place merges, then one planner per device and scope.

    With ``planner="best"``, an arena that misses the live-set bound gets up to
    ``solve_seconds`` of exact search (per arena).

    Returns ``(FunctionMemoryPlan, FunctionLiveness)``.
    """
    liveness = function_liveness(func, mod)
    result = FunctionMemoryPlan(function=name)
    candidates = {}
    for n, alloc in liveness.allocs.items():
        reason = _why_unplannable(alloc, liveness)
        if reason:
            result.unplanned[n] = reason
        else:
            candidates[n] = alloc
    for n, reason in result.unplanned.items():
        if reason.startswith("size"):
            warnings.warn(f"fluidml_tvm: {name}: tensor {n} left to TVM's planner: {reason}")

    merges = inplace_merges(mod, liveness, candidates) if inplace else []
    tensor_intervals = [Interval(n, align(a.nbytes), *liveness.lifetimes[n]) for n, a in candidates.items()]
    result.live_set_lower_bound = live_set_peak(tensor_intervals)
    result.no_reuse_bytes = sum(iv.nbytes for iv in tensor_intervals)
    # In-place reuse lowers the live set but makes long buffers that can fragment
    # the arena: plan with and without it and keep the smaller.
    options = [_place(candidates, liveness, m, planner, offsets, solve_seconds) for m in ([merges, []] if merges else [[]])]
    where, storages, strategies, owner, result.inplace, result.proved_bound = min(
        options, key=lambda o: sum(s.nbytes for s in o[1]))
    result.storages = storages
    result.strategy = "+".join(sorted(set(strategies))) + ("+inplace" if result.inplace else "")
    for n in sorted(candidates, key=lambda n: liveness.lifetimes[n]):
        storage, offset = where[owner[n]]
        start, end = liveness.lifetimes[n]
        result.tensors.append(PlannedTensor(n, candidates[n].nbytes, start, end, owner[n], storage, offset))
    return result, liveness


def _place(candidates, liveness, merges, planner, offsets, solve_seconds):
    """Run the planner per (device, scope) with ``merges`` applied."""
    owner = {n: n for n in candidates}
    for a, b in merges:  # b writes over a: b joins a's buffer
        owner[b] = owner[a]
    groups: dict = {}
    for iv in _buffer_intervals(candidates, liveness, owner):
        alloc = candidates[iv.name]
        groups.setdefault((alloc.device_index, alloc.scope), []).append(iv)
    where, storages, strategies, bound = {}, [], [], 0
    for (device_index, scope), ivs in sorted(groups.items()):
        if not offsets:
            plan = shared_buffers(ivs)
        elif planner == "best":
            plan = best_arena(ivs, solve_seconds=solve_seconds)
        else:
            plan = get_planner(planner)(ivs)
        strategies.append(plan.strategy)
        bound += plan.lower_bound or live_set_peak(ivs)
        base = len(storages)
        storages += [StorageSpec(nbytes, device_index, scope) for nbytes in plan.storages]
        for buf, (s, off) in plan.placement.items():
            where[buf] = (base + s, off)
    return where, storages, strategies, owner, list(merges), bound


def _why_unplannable(alloc, liveness) -> str | None:
    if alloc.storage is not None:
        return "already placed in a storage"
    if alloc.name in liveness.escaping:
        return "returned from the function"
    if alloc.scope != "global":
        # Texture and other special scopes have their own allocation rules (2-D images).
        return f"storage scope '{alloc.scope}' is left to TVM"
    if alloc.nbytes is None:
        return f"size of shape {alloc.shape} has no static upper bound (set tir_var_upper_bound)"
    return None


def _buffer_intervals(candidates, liveness, owner) -> list:
    spans: dict = {}
    for n in candidates:
        s, e = liveness.lifetimes[n]
        b = owner[n]
        lo, hi, size = spans.get(b, (s, e, 0))
        spans[b] = (min(lo, s), max(hi, e), max(size, align(candidates[n].nbytes)))
    return [Interval(b, size, lo, hi) for b, (lo, hi, size) in spans.items()]
