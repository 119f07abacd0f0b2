"""PackWeights: matmuls with a constant weight read it packed as [N/n, K, n], n chosen from measured costs."""

from __future__ import annotations

import dataclasses
import json

import tvm
from tvm import relax

from ..analysis.packing import plan_packing
from ..analysis.weight_layouts import LAYOUTS_ATTR, candidates, chosen_layouts, weight_layout_graph, workload
from ..layout.costs import LayoutCostDatabase, MeasuredLayoutCosts
from ..layout.planners import INF, plan_layouts
from ..rewrite.pack_matmul import rewrite_packed_matmuls
from ..targets import describe


@tvm.transform.module_pass(opt_level=0, name="fluidml_tvm.PackWeights")
class PackWeights:
    """Give every float32 ``R.matmul`` with a constant weight a packed-weight kernel.

    Place it on the high-level module, after import and before LegalizeOps
    (first in the ``"fuse"`` stage): there ``R.matmul`` and its constant weight
    (and the ``permute_dims`` of ``Gemm(transB=1)``) are still visible, and the
    stage's own LegalizeOps + FoldConstant turn each ``R.layout_transform`` of a
    weight into the packed constant at build time.  After legalization the
    weight's transpose would already be folded into a second copy.

    A weight with other readers (a tied embedding) is not packed; a transposed
    one is read in place by a ``dense`` kernel, so no copy of it is ever made.
    NCHW conv2d weights (``groups == 1``) are packed by output channel.  Only
    CPU (``llvm``) targets are rewritten.

    The block ``n`` of each weight (1-4 vectors; it is also the kernel's
    register-tile width) is chosen by the whole-graph layout planner from the
    kernels' measured times under each candidate, predicted by XGBoost where
    not measured (:mod:`fluidml_tvm.layout.costs`); a kernel with no
    cost known keeps two vectors.  Each function records its choices (value,
    workload, layout, block, and the seconds of each candidate when known) as
    JSON in its ``LAYOUTS_ATTR`` (:mod:`fluidml_tvm.analysis.weight_layouts`).

    Parameters
    ----------
    target : TargetDescription
        The fp32 lanes and the cost records' key come from it (or from
        ``describe(target)``).
    layout_costs : LayoutCostDatabase, optional
        Default: the records shipped in ``schedules/``.
    """

    def __init__(self, target, layout_costs: LayoutCostDatabase | None = None):
        self.target = describe(target)
        self.layout_costs = layout_costs

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        if not self.target.cpu:
            return mod  # GPU kernels want other layouts; ScheduleKernels is CPU-only too
        out = mod
        for gv, func in mod.functions.items():
            if not isinstance(func, relax.Function):
                continue
            decisions = plan_packing(func, self.target.lanes)
            if decisions:
                decisions, seconds = self._choose_blocks(decisions)
            if decisions:
                out = rewrite_packed_matmuls(out, gv, decisions)
                out[gv] = out[gv].with_attr(LAYOUTS_ATTR, json.dumps([
                    {"value": d.var.name, "workload": list(workload(d)), "layout": d.layout, "block": d.block,
                     "seconds": s} for d, s in zip(decisions, seconds)]))
        return out

    def _choose_blocks(self, decisions):
        database = self.layout_costs if self.layout_costs is not None else LayoutCostDatabase.for_build()
        layouts = [candidates(d, self.target.lanes) for d in decisions]
        graph = weight_layout_graph(decisions, layouts)
        costs = MeasuredLayoutCosts(database, self.target, {str(i): workload(d) for i, d in enumerate(decisions)},
                                    {str(i): ls for i, ls in enumerate(layouts)})
        plan = plan_layouts(graph, costs)
        # per kernel {"layout/block": seconds}, or None when no record: the default block is kept
        seconds = [None if all(t in (0.0, INF) for t in costs.costs[str(i)].values())
                   else {f"{layout}/{block}": t for (layout, block), t in costs.costs[str(i)].items()}
                   for i in range(len(decisions))]
        return [dataclasses.replace(d, block=int(layout[1]))
                for d, layout in zip(decisions, chosen_layouts(plan, len(decisions)))], seconds
