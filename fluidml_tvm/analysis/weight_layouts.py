"""The layout graph of a function's packable matmuls and conv2ds, for the whole-graph planner.

Each :class:`~fluidml_tvm.analysis.packing.PackDecision` is a node reading its
activation (one layout: as the producer writes it) and its weight (every
candidate block, :func:`fluidml_tvm.tuning.layout_costs.candidates`), writing
its result.  Weights are constants, re-laid-out once at build time, so the
plan's cost is the sum of the kernels' times in the chosen layouts.
"""

from __future__ import annotations

from .layout_dp import LayoutGraph, LayoutPlan
from .packing import PackDecision

ACTIVATION = ("row",)


def weight_layout_graph(decisions: list[PackDecision], layouts: list[list[tuple]]) -> LayoutGraph:
    """``layouts[i]``: the weight layouts of ``decisions[i]``, default first; node ``i`` is named ``str(i)``."""
    names: dict = {}

    def name(var, prefix):
        return names.setdefault(var, f"{prefix}{len(names)}:{getattr(var, 'name', 'const')}")

    tensors, nodes = {}, []
    for i, (decision, candidates) in enumerate(zip(decisions, layouts)):
        x, w, y = name(decision.call.args[0], "t"), name(decision.weight, "w"), name(decision.var, "t")
        tensors.setdefault(x, ACTIVATION)
        tensors[w] = tuple(candidates)
        tensors[y] = ACTIVATION
        nodes.append((str(i), (x, w), y))
    return LayoutGraph.build(tensors, nodes)


def chosen_layouts(plan: LayoutPlan, count: int) -> list[tuple]:
    """The weight layout node ``i`` reads, for ``i < count``."""
    return [tuple(plan.wants[str(i)][1]) for i in range(count)]
