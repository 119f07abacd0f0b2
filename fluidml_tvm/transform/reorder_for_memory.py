"""ReorderForMemory: run each dataflow block in the order with the smallest live peak."""

from __future__ import annotations

import tvm
from tvm import relax

from ..analysis.order import block_graph, memory_order
from ..rewrite.module import with_functions
from ..rewrite.reorder import reorder_blocks


@tvm.transform.module_pass(opt_level=0, name="fluidml_tvm.ReorderForMemory")
class ReorderForMemory:
    """Topologically reorder the bindings of every dataflow block to lower peak memory.

    Runs on a legalized, fused module (dataflow blocks of ``R.call_tir``);
    never changes what is computed.
    """

    def __init__(self, exact_limit: int = 20000):
        self.exact_limit = exact_limit

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        updates = {}
        for gv, func in mod.functions.items():
            if not isinstance(func, relax.Function):
                continue
            orders = {}
            for i, block in enumerate(func.body.blocks):
                if not isinstance(block, relax.DataflowBlock) or len(block.bindings) < 3:
                    continue
                graph = block_graph(block, _used_after(func, i))
                order = memory_order(graph, self.exact_limit)
                if order != list(range(graph.size)):
                    orders[i] = order
            if orders:
                updates[gv] = reorder_blocks(func, orders)
        return with_functions(mod, updates)


def _used_after(func, i) -> set:
    rest = relax.SeqExpr(list(func.body.blocks[i + 1:]), func.body.body)
    return set(relax.analysis.free_vars(rest))
