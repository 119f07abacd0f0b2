"""The memory report: a plan's figures beside TVM's own planner on the same module."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import tvm
from tvm import relax

from .analysis.layout_kernels import recorded_folds
from .analysis.liveness import function_liveness
from .analysis.memory_plan import plan_function, recorded_plan
from .analysis.scratch import scratch_by_callee
from .analysis.weight_layouts import recorded_layouts
from .frontend.onnx_labels import is_generated
from .memory.plan import Interval, live_set_peak


@dataclass
class FunctionReport:
    """Memory figures of one Relax function, in bytes."""

    function: str
    arena_bytes: int
    live_set_lower_bound: int  # over the order FluidML runs, before in-place reuse
    proved_bound: int  # no placement of these buffers (in-place pairs included) in this order needs less
    tvm_order_lower_bound: int  # over TVM's own order
    tvm_planner_bytes: int  # StaticPlanBlockMemory on the same module
    no_reuse_bytes: int
    tvm_kernel_scratch_bytes: int  # largest scratch one kernel allocates for itself in TVM's build
    kernel_scratch_left_bytes: int  # the same, in the planned build (what was not lifted)
    strategy: str
    status: str  # "optimal" (proved for this order and these lifetimes) or the gap to the bound
    tensors: list = field(default_factory=list)  # PlannedTensor
    inplace: list = field(default_factory=list)
    unplanned: dict = field(default_factory=dict)
    values: dict = field(default_factory=dict)  # tensor -> the value written there (named after its ONNX node)
    kernels: dict = field(default_factory=dict)  # kernel -> the values its calls write
    layouts: list = field(default_factory=list)  # PackWeights' choices (LAYOUTS_ATTR)
    folds: list = field(default_factory=list)  # FoldLayoutKernels' folds (FOLDS_ATTR)

    def summary(self) -> str:
        def mb(n):
            return f"{n / 2**20:.2f} MiB"

        bound = self.arena_bytes / self.tvm_order_lower_bound if self.tvm_order_lower_bound else float("nan")
        total = self.total_bytes / self.tvm_total_bytes if self.tvm_total_bytes else float("nan")
        return (
            f"{self.function}: arena {mb(self.arena_bytes)} ({self.strategy}, {self.status}), "
            f"live-set bound of TVM's order {mb(self.tvm_order_lower_bound)} (x{bound:.3f}); "
            f"activations + kernel scratch {mb(self.total_bytes)} vs TVM's "
            f"{mb(self.tvm_planner_bytes)} + {mb(self.tvm_kernel_scratch_bytes)} (x{total:.2f}); "
            f"no reuse {mb(self.no_reuse_bytes)}; {len(self.tensors)} tensors, "
            f"{len(self.inplace)} in place, {len(self.unplanned)} left to TVM"
        )

    @property
    def total_bytes(self) -> int:
        """The arena plus the scratch kernels still allocate for themselves."""
        return self.arena_bytes + self.kernel_scratch_left_bytes

    @property
    def tvm_total_bytes(self) -> int:
        return self.tvm_planner_bytes + self.tvm_kernel_scratch_bytes


@dataclass
class MemoryReport:
    functions: dict = field(default_factory=dict)  # name -> FunctionReport
    plan_seconds: float = 0.0

    def __getitem__(self, name) -> FunctionReport:
        return self.functions[name]

    def summary(self) -> str:
        return "\n".join(f.summary() for f in self.functions.values())

    def to_json(self) -> str:
        return json.dumps({"plan_seconds": self.plan_seconds,
                           "functions": {k: asdict(v) for k, v in self.functions.items()}}, indent=1)


def memory_report(planned: tvm.IRModule, tvm_lowered: tvm.IRModule, plan_seconds: float = 0.0,
                  same_tensors: tvm.IRModule | None = None) -> MemoryReport:
    """Compare each planned function with TVM on ``tvm_lowered`` (the same module, lowered in TVM's order).

    The live-set bound of TVM's order is taken on ``same_tensors``:
    ``tvm_lowered`` with the tensors the plan places, i.e. with the kernel
    scratch lifted when the plan lifted it (default: ``tvm_lowered``).
    """
    tvm_planned = relax.transform.StaticPlanBlockMemory()(tvm_lowered)
    same_tensors = tvm_lowered if same_tensors is None else same_tensors
    report = MemoryReport(plan_seconds=plan_seconds)
    for gv, func in planned.functions.items():
        plan = recorded_plan(func) if isinstance(func, relax.Function) else None
        if plan is None or (not plan.tensors and not plan.unplanned):
            continue  # not planned, or nothing allocated (e.g. a constant function)
        name = gv.name_hint
        tvm_order, _ = plan_function(same_tensors, same_tensors[name], name, inplace=False)
        tvm_storages = function_liveness(tvm_planned[name]).storages
        tvm_scratch = scratch_by_callee(tvm_lowered, function_liveness(tvm_lowered[name], tvm_lowered))
        liveness = function_liveness(func, planned)
        left = scratch_by_callee(planned, liveness)
        report.functions[name] = FunctionReport(
            function=name,
            arena_bytes=plan.arena_bytes,
            live_set_lower_bound=plan.live_set_lower_bound,
            proved_bound=plan.proved_bound,
            tvm_order_lower_bound=tvm_order.live_set_lower_bound,
            tvm_planner_bytes=sum(v or 0 for v in tvm_storages.values()),
            no_reuse_bytes=plan.no_reuse_bytes,
            tvm_kernel_scratch_bytes=max(tvm_scratch.values(), default=0),
            kernel_scratch_left_bytes=max(left.values(), default=0),
            strategy=plan.strategy,
            status=plan.status,
            tensors=plan.tensors,
            inplace=[list(p) for p in plan.inplace],
            unplanned=plan.unplanned,
            values=named_values(liveness),
            kernels=kernel_values(liveness),
            layouts=recorded_layouts(func),
            folds=recorded_folds(func),
        )
    return report


@dataclass(frozen=True)
class StoredTensor:
    """A tensor of TVM's default build: ``start``/``end`` as in PlannedTensor, in one of TVM's storages."""

    name: str
    nbytes: int
    start: int
    end: int
    storage: str


@dataclass
class DefaultBuildPlan:
    """TVM's default build of a function: one storage per group of tensors StaticPlanBlockMemory shares."""

    function: str
    storages: dict  # storage -> bytes, in the order first used
    tensors: list  # StoredTensor
    values: dict  # tensor -> the value written there
    kernels: dict  # kernel -> the values its calls write
    live_set_lower_bound: int  # over TVM's order: no placement of these tensors in this order needs less
    kernel_scratch_bytes: int  # the largest scratch one kernel allocates for itself, outside the plan

    @property
    def planner_bytes(self) -> int:
        return sum(self.storages.values())


def default_build_plan(planned: tvm.IRModule, name: str = "main") -> DefaultBuildPlan:
    """Read TVM's plan of ``planned[name]`` (TVM's dataflow lowering, then StaticPlanBlockMemory)."""
    liveness = function_liveness(planned[name], planned)
    tensors = []
    for alloc in sorted(liveness.allocs.values(), key=lambda a: liveness.lifetimes[a.name]):
        if alloc.storage is not None and liveness.storages.get(alloc.storage) is not None and alloc.nbytes:
            tensors.append(StoredTensor(alloc.name, alloc.nbytes, *liveness.lifetimes[alloc.name], alloc.storage))
    order = list(dict.fromkeys(t.storage for t in tensors))
    bound = live_set_peak([Interval(t.name, t.nbytes, t.start, t.end) for t in tensors])
    scratch = scratch_by_callee(planned, liveness)
    return DefaultBuildPlan(name, {s: liveness.storages[s] for s in order}, tensors, named_values(liveness),
                            kernel_values(liveness), bound, max(scratch.values(), default=0))


def named_values(liveness) -> dict:
    """``tensor -> value`` for the values named after an ONNX node (not the ones TVM made up)."""
    return {t: v for t, v in liveness.values.items() if not is_generated(v)}


def kernel_values(liveness) -> dict:
    """``kernel -> [the values its calls write]``: a tensor is written by the first call that touches it
    (scratch, never bound to a value, is left out)."""
    out: dict = {}
    seen: set = set()
    values = named_values(liveness)
    for call in liveness.calls:
        touched = {r for arg in call.args for r in arg}
        written = sorted(touched - seen, key=lambda r: liveness.lifetimes.get(r, (0, 0)))
        seen |= touched
        out.setdefault(call.callee, []).extend(values[w] for w in written if w in values)
    return out

