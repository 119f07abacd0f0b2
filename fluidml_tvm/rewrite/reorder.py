"""Reorder the bindings of dataflow blocks."""

from __future__ import annotations

from tvm import relax


def reorder_blocks(func: relax.Function, orders: dict) -> relax.Function:
    """Return ``func`` with ``orders[block index]`` (a permutation) applied to its blocks."""
    blocks = []
    for i, block in enumerate(func.body.blocks):
        order = orders.get(i)
        if order is None:
            blocks.append(block)
        else:
            blocks.append(relax.DataflowBlock([block.bindings[j] for j in order]))
    # Normalized, so that the body carries its type as every Relax expression must.
    body = relax.BlockBuilder().normalize(relax.SeqExpr(blocks, func.body.body))
    return relax.Function(func.params, body, func.ret_ty, func.is_pure, func.attrs)
