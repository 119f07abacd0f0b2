"""The layout graph of a function's packable matmuls and conv2ds, for the whole-graph planner.

Each :class:`~fluidml_tvm.analysis.packing.PackDecision` is a node reading its
activation (one layout: as the producer writes it) and its weight (every
candidate block, :func:`candidates`), writing
its result.  Weights are constants, re-laid-out once at build time, so the
plan's cost is the sum of the kernels' times in the chosen layouts.
"""

from __future__ import annotations

import json
import math

from ..layout.planners import LayoutGraph, LayoutPlan
from .packing import PackDecision, block_candidates, static_shape

ACTIVATION = ("row",)
# The function attribute holding the weight layouts PackWeights chose for a function (JSON), read by the report.
LAYOUTS_ATTR = "fluidml_tvm.weight_layouts"



def recorded_layouts(func) -> list[dict]:
    """The weight layouts PackWeights recorded on ``func`` (one dict per weight: value, workload, layout,
    block, and ``seconds`` of each candidate, None when nothing was known); [] when none."""
    return json.loads(str(func.attrs[LAYOUTS_ATTR])) if func.attrs and LAYOUTS_ATTR in func.attrs else []


def chosen_seconds(layout: dict) -> float | None:
    """The time of the candidate a recorded layout chose (None: no record, the default block)."""
    return layout["seconds"][f"{layout['layout']}/{layout['block']}"] if layout["seconds"] else None

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


def workload(decision: PackDecision) -> tuple:
    """The kernel's shape, independent of layout: ``("matmul", M, K, N, "kn"|"nk")`` or a conv2d's."""
    if decision.layout == "conv2d":
        a = decision.call.attrs
        padding = [int(p) for p in a.padding] * (4 // len(a.padding))
        data = [int(s) for s in decision.call.args[0].ty.shape.values]
        kernel = static_shape(decision.weight)
        return ("conv2d", *data, kernel[0], *kernel[2:], *[int(s) for s in a.strides], *padding,
                *[int(d) for d in a.dilation])
    out = [int(s) for s in decision.var.ty.shape.values]
    return ("matmul", math.prod(out[:-1]), decision.k, decision.n, "nk" if decision.transposed else "kn")


def candidates(decision: PackDecision, lanes: int) -> list[tuple]:
    """The weight layouts to choose from for one kernel (the default first)."""
    blocks = block_candidates(decision.n, lanes, padded=decision.layout == "dense")
    ordered = [decision.block] + [b for b in blocks if b != decision.block]
    return [(decision.layout, int(b)) for b in ordered]
